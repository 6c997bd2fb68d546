#include "identity/master_key.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/base64url.h"
#include "crypto/crypto.h"

namespace kw::identity {
namespace {

// The longest acceptable file is 64 hex characters and "\r\n"; anything much longer is refused
// before it is read, so a wrong path (a log file, a device) cannot make us slurp megabytes.
constexpr size_t kMaxFileBytes = 128;

std::string FileTypeName(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

// ---- SecretBytes ----

void Cleanse(std::string* s) {
  // resize() first so that every byte written is inside the string's size: the whole capacity,
  // including whatever a previous, longer value left behind, is overwritten.
  s->resize(s->capacity());
  OPENSSL_cleanse(s->data(), s->size());
  s->clear();
}

SecretBytes::SecretBytes(std::string&& bytes) : bytes_(std::move(bytes)) { Cleanse(&bytes); }

SecretBytes::~SecretBytes() { Wipe(); }

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : bytes_(std::move(other.bytes_)) {
  Cleanse(&other.bytes_);
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Wipe();
    bytes_ = std::move(other.bytes_);
    Cleanse(&other.bytes_);
  }
  return *this;
}

void SecretBytes::Wipe() { Cleanse(&bytes_); }

// ---- MasterKey ----

MasterKey::MasterKey() { key_.fill(0); }

MasterKey::MasterKey(MasterKey&& other) noexcept
    : key_(other.key_), fingerprint_(std::move(other.fingerprint_)) {
  OPENSSL_cleanse(other.key_.data(), other.key_.size());
}

MasterKey& MasterKey::operator=(MasterKey&& other) noexcept {
  if (this != &other) {
    key_ = other.key_;
    fingerprint_ = std::move(other.fingerprint_);
    OPENSSL_cleanse(other.key_.data(), other.key_.size());
  }
  return *this;
}

MasterKey::~MasterKey() { OPENSSL_cleanse(key_.data(), key_.size()); }

void MasterKey::ComputeFingerprint() {
  std::string mac = crypto::HmacSha256(
      std::string_view(reinterpret_cast<const char*>(key_.data()), key_.size()),
      "keyward master key fingerprint");
  fingerprint_ = HexEncode(std::string_view(mac).substr(0, 8));
}

MasterKey MasterKey::Generate() {
  MasterKey k;
  if (RAND_priv_bytes(k.key_.data(), static_cast<int>(k.key_.size())) != 1) {
    // Only fails when the DRBG cannot be seeded at all; there is no safe fallback key, and the
    // library never aborts, so fall back to the public DRBG (seeded from the same source).
    RAND_bytes(k.key_.data(), static_cast<int>(k.key_.size()));
  }
  k.ComputeFingerprint();
  return k;
}

Result<MasterKey> MasterKey::Load(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not hang waiting for a writer; the type check refuses it.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    int e = errno;
    if (e == ENOENT) return NotFoundError(fmt::format("master key file {} does not exist", path));
    if (e == EACCES) {
      return PermissionDeniedError(
          fmt::format("master key file {} cannot be opened: {}", path, std::strerror(e)));
    }
    return UnavailableError(
        fmt::format("master key file {} cannot be opened: {}", path, std::strerror(e)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return UnavailableError(
        fmt::format("master key file {} cannot be examined: {}", path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return PermissionDeniedError(fmt::format(
        "master key file {} is {}; it must be a regular file", path, FileTypeName(st.st_mode)));
  }
  if (st.st_uid != ::geteuid()) {
    return PermissionDeniedError(fmt::format(
        "master key file {} is owned by uid {}, not by the user running Keyward (uid {}); "
        "chown it",
        path, st.st_uid, ::geteuid()));
  }
  unsigned perm = st.st_mode & 07777;
  if (perm & 077) {
    const char* what = (perm & 044) ? "readable by group or others"
                                    : "writable or executable by group or others";
    return PermissionDeniedError(
        fmt::format("master key file {} is {} (mode {:04o}); chmod 600 it", path, what, perm));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) {
    return InvalidArgumentError(fmt::format(
        "master key file {} is {} bytes long; it must hold 64 hex or 43 base64url characters",
        path, static_cast<uint64_t>(st.st_size)));
  }

  std::string text(kMaxFileBytes + 1, '\0');
  size_t len = 0;
  while (len < text.size()) {
    ssize_t n = ::read(fd.get(), text.data() + len, text.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      Cleanse(&text);
      return UnavailableError(
          fmt::format("master key file {} cannot be read: {}", path, std::strerror(e)));
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  std::string_view body(text.data(), len);
  if (body.ends_with("\r\n")) {
    body.remove_suffix(2);
  } else if (body.ends_with('\n')) {
    body.remove_suffix(1);
  }

  // Decode into SecretBytes so the decoded copy is cleansed whatever happens below.
  SecretBytes decoded;
  bool well_formed = false;
  if (body.size() == 2 * kSize) {
    auto r = HexDecode(body);
    if (r.ok()) {
      decoded = SecretBytes(std::move(r).value());
      well_formed = true;
    }
  } else if (body.size() == 43) {
    auto r = Base64UrlDecode(body);
    if (r.ok()) {
      decoded = SecretBytes(std::move(r).value());
      well_formed = decoded.size() == kSize;
    }
  }
  size_t body_len = body.size();
  Cleanse(&text);
  if (!well_formed) {
    // The message gives the length only: the content is, or is close to, a secret.
    return InvalidArgumentError(fmt::format(
        "master key file {} must contain exactly 32 bytes as 64 hexadecimal or 43 base64url "
        "characters (and an optional newline); it contains {} characters that are not such a key",
        path, body_len));
  }
  MasterKey key;
  std::memcpy(key.key_.data(), decoded.view().data(), kSize);
  key.ComputeFingerprint();
  return key;
}

Result<MasterKey> MasterKey::Create(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    return AlreadyExistsError(
        fmt::format("master key file {} already exists; refusing to overwrite it", path));
  }
  MasterKey key = Generate();
  // Encoded into one buffer of its final size, so no reallocation leaves a copy behind.
  SecretBytes secret_text(std::string(2 * kSize + 1, '\n'));
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < kSize; ++i) {
    secret_text.data()[2 * i] = kDigits[key.key_[i] >> 4];
    secret_text.data()[2 * i + 1] = kDigits[key.key_[i] & 0xf];
  }

  // Write a temporary file, then link() it into place: link fails with EEXIST instead of
  // replacing, so a concurrent Create (or a file created since the check above) is never
  // overwritten, and the final name only ever names a complete, synced file.
  std::string tmp = path + ".tmp.XXXXXX";
  Fd fd(::mkstemp(tmp.data()));
  if (fd.get() < 0) {
    return UnavailableError(fmt::format("cannot create a temporary file next to master key file "
                                        "{}: {}",
                                        path, std::strerror(errno)));
  }
  auto fail = [&](std::string what) -> Status {
    int e = errno;
    ::unlink(tmp.c_str());
    return UnavailableError(
        fmt::format("cannot create master key file {}: {}: {}", path, what, std::strerror(e)));
  };
  if (::fchmod(fd.get(), 0600) != 0) return fail("chmod");
  std::string_view data = secret_text.view();
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("fsync");
  if (::close(fd.Release()) != 0) return fail("close");
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    if (e == EEXIST) {
      return AlreadyExistsError(
          fmt::format("master key file {} already exists; refusing to overwrite it", path));
    }
    return UnavailableError(
        fmt::format("cannot create master key file {}: link: {}", path, std::strerror(e)));
  }
  ::unlink(tmp.c_str());
  // Make the new directory entry durable too.
  Fd dir(::open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) ::fsync(dir.get());
  return key;
}

}  // namespace kw::identity
