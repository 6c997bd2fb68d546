// MasterKey: the one symmetric key that seals every signing key the identity service stores.
//
// A stolen database of sealed keys is worthless without this key, so it lives apart from the
// database, in a file only its owner can read. Loading refuses a file that anyone else could
// read or replace.
//
// Master key file format: 32 random bytes as either 64 hexadecimal characters (either case) or
// 43 base64url characters (RFC 4648 §5, no padding, canonical), optionally followed by one
// newline ("\n" or "\r\n"). Nothing else is accepted: no leading or inner whitespace, no other
// length. Create() writes the hexadecimal form.
//
// Secrecy: the key bytes live only inside the MasterKey (cleansed with OPENSSL_cleanse when it is
// destroyed or moved from) and in the sealed-box code that reads them. They never appear in an
// error message, a log line or an audit event; Fingerprint() is a one-way identifier that may.
//
// Thread safety: a MasterKey is immutable after construction; const methods may be called from
// any number of threads.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kw::identity {

// Bytes that must not outlive their use: the buffer is overwritten (OPENSSL_cleanse) when the
// object is destroyed or assigned over. Move-only; a moved-from SecretBytes is empty.
class SecretBytes {
 public:
  SecretBytes() = default;
  // Takes over `bytes`' buffer (no copy is left behind for strings longer than the small-string
  // buffer; short strings are copied and the source cleansed).
  explicit SecretBytes(std::string&& bytes);
  ~SecretBytes();
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  std::string_view view() const { return bytes_; }
  // Writable access to the bytes (for filling a buffer sized in advance).
  char* data() { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

 private:
  void Wipe();
  std::string bytes_;
};

// Overwrites a string's contents (all of its capacity) with zeros and empties it.
void Cleanse(std::string* s);

class MasterKey {
 public:
  static constexpr size_t kSize = 32;

  // Loads the master key file at `path`. Errors, each message naming the path and the problem
  // (never the content):
  //  - NotFound: the file does not exist.
  //  - PermissionDenied: not a regular file (directory, device, FIFO...), owned by a user other
  //    than the effective user, or any group/other permission bit set (mode & 077 != 0), e.g.
  //    "master key file /x is readable by group or others (mode 0644); chmod 600 it".
  //  - InvalidArgument: the content is not exactly one encoded 32-byte key (see file format).
  //  - Unavailable: the file could not be opened or read for another reason.
  // Symbolic links are followed; the checks apply to the file actually opened (fstat on the open
  // descriptor, so the file cannot be swapped between check and read).
  static Result<MasterKey> Load(const std::string& path);

  // Generates a fresh key from OpenSSL's private DRBG and writes it to `path` (hexadecimal form,
  // mode 0600, owned by the effective user) atomically: the file appears complete or not at all.
  // Never overwrites: AlreadyExists if `path` exists. Unavailable on an I/O error.
  static Result<MasterKey> Create(const std::string& path);

  // A fresh key held only in memory: for tests and the simulator.
  static MasterKey Generate();

  MasterKey(MasterKey&& other) noexcept;
  MasterKey& operator=(MasterKey&& other) noexcept;
  MasterKey(const MasterKey&) = delete;
  MasterKey& operator=(const MasterKey&) = delete;
  ~MasterKey();

  // A stable public identifier of this key: 16 hex characters of HMAC-SHA-256(key,
  // "keyward master key fingerprint"). Reveals nothing about the key; stored next to every
  // sealed blob so that a wrong master key is reported as such rather than as corruption.
  const std::string& Fingerprint() const { return fingerprint_; }

  // The raw key, for the sealed box only (sealed_box.cc). Never log or copy it.
  const uint8_t* bytes_for_sealing() const { return key_.data(); }

 private:
  MasterKey();
  void ComputeFingerprint();

  std::array<uint8_t, kSize> key_;
  std::string fingerprint_;
};

}  // namespace kw::identity
