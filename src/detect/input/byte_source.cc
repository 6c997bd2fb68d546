#include "detect/input/byte_source.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace kw::detect::internal {
namespace {

class FileSource : public ByteSource {
 public:
  FileSource(int fd, uint64_t size) : fd_(fd), size_(size) {}
  ~FileSource() override { ::close(fd_); }

  Result<size_t> Read(char* buf, size_t n) override {
    for (;;) {
      ssize_t r = ::read(fd_, buf, n);
      if (r >= 0) {
        consumed_ += static_cast<uint64_t>(r);
        return static_cast<size_t>(r);
      }
      if (errno == EINTR) continue;
      return UnavailableError(fmt::format("read failed: {}", std::strerror(errno)));
    }
  }
  uint64_t bytes_consumed() const override { return consumed_; }
  uint64_t total_bytes() const override { return size_; }

 private:
  int fd_;
  uint64_t size_;
  uint64_t consumed_ = 0;
};

class MemSource : public ByteSource {
 public:
  explicit MemSource(std::string_view data) : data_(data) {}
  Result<size_t> Read(char* buf, size_t n) override {
    size_t k = std::min(n, data_.size() - pos_);
    std::memcpy(buf, data_.data() + pos_, k);
    pos_ += k;
    return k;
  }
  uint64_t bytes_consumed() const override { return pos_; }
  uint64_t total_bytes() const override { return data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

class PrefixedSource : public ByteSource {
 public:
  PrefixedSource(std::string prefix, std::unique_ptr<ByteSource> raw)
      : prefix_(std::move(prefix)), raw_(std::move(raw)) {}
  Result<size_t> Read(char* buf, size_t n) override {
    if (pos_ < prefix_.size()) {
      size_t k = std::min(n, prefix_.size() - pos_);
      std::memcpy(buf, prefix_.data() + pos_, k);
      pos_ += k;
      return k;
    }
    return raw_->Read(buf, n);
  }
  uint64_t bytes_consumed() const override {
    return raw_->bytes_consumed() - (prefix_.size() - pos_);
  }
  uint64_t total_bytes() const override { return raw_->total_bytes(); }
  std::string damage() const override { return raw_->damage(); }

 private:
  std::string prefix_;
  size_t pos_ = 0;
  std::unique_ptr<ByteSource> raw_;
};

class GzSource : public ByteSource {
 public:
  explicit GzSource(std::unique_ptr<ByteSource> raw) : raw_(std::move(raw)), in_(1 << 18) {
    std::memset(&z_, 0, sizeof z_);
    ok_ = inflateInit2(&z_, 16 + MAX_WBITS) == Z_OK;
    if (!ok_) damage_ = "zlib could not be initialised";
  }
  ~GzSource() override { inflateEnd(&z_); }

  Result<size_t> Read(char* buf, size_t n) override {
    if (!ok_ || done_) return size_t{0};
    z_.next_out = reinterpret_cast<Bytef*>(buf);
    z_.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    while (z_.avail_out > 0) {
      if (z_.avail_in == 0) {
        KW_ASSIGN_OR_RETURN(size_t got, raw_->Read(in_.data(), in_.size()));
        if (got == 0) {
          // A clean end falls between members; anywhere else the file was cut short.
          if (in_member_) {
            damage_ = fmt::format("gzip stream truncated after {} compressed bytes",
                                  raw_->bytes_consumed());
          }
          done_ = true;
          break;
        }
        z_.next_in = reinterpret_cast<Bytef*>(in_.data());
        z_.avail_in = static_cast<uInt>(got);
      }
      if (!in_member_) {
        // Another member may follow a finished one (concatenated .gz files); anything else
        // after the first member is damage.
        if (z_.avail_in >= 1 && z_.next_in[0] != 0x1f) {
          damage_ = fmt::format("trailing garbage after gzip data at compressed byte {}",
                                raw_->bytes_consumed() - z_.avail_in);
          done_ = true;
          break;
        }
        inflateReset(&z_);
        in_member_ = true;
      }
      int rc = inflate(&z_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        in_member_ = false;
        continue;
      }
      if (rc == Z_BUF_ERROR) continue;  // needs more input; the loop reads it
      if (rc != Z_OK) {
        damage_ = fmt::format("gzip data corrupt near compressed byte {}: {}",
                              raw_->bytes_consumed() - z_.avail_in,
                              z_.msg != nullptr ? z_.msg : "inflate failed");
        done_ = true;
        break;
      }
    }
    return n - z_.avail_out;
  }
  uint64_t bytes_consumed() const override { return raw_->bytes_consumed() - z_.avail_in; }
  uint64_t total_bytes() const override { return raw_->total_bytes(); }
  std::string damage() const override { return damage_; }

 private:
  std::unique_ptr<ByteSource> raw_;
  std::vector<char> in_;
  z_stream z_;
  bool ok_ = false;
  bool done_ = false;
  bool in_member_ = false;
  std::string damage_;
};

}  // namespace

Result<std::unique_ptr<ByteSource>> OpenFileSource(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string msg = fmt::format("{}: {}", path, std::strerror(e));
    if (e == ENOENT) return NotFoundError(msg);
    if (e == EACCES || e == EPERM) return PermissionDeniedError(msg);
    return UnavailableError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(fmt::format("{}: is a directory or cannot be read", path));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  uint64_t size = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  return std::unique_ptr<ByteSource>(new FileSource(fd, size));
}

std::unique_ptr<ByteSource> MemorySource(std::string_view data) {
  return std::make_unique<MemSource>(data);
}

std::unique_ptr<ByteSource> PrefixSource(std::string prefix, std::unique_ptr<ByteSource> raw) {
  return std::make_unique<PrefixedSource>(std::move(prefix), std::move(raw));
}

std::unique_ptr<ByteSource> GzipSource(std::unique_ptr<ByteSource> raw) {
  return std::make_unique<GzSource>(std::move(raw));
}

}  // namespace kw::detect::internal
