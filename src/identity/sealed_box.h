// Sealed box: authenticated encryption of secrets at rest under the MasterKey.
//
// Blob layout (all lengths in bytes):
//
//   +---------+-----------+----------------------+---------+
//   | version | nonce     | ciphertext           | tag     |
//   | 1 (=1)  | 12        | len(plaintext)       | 16      |
//   +---------+-----------+----------------------+---------+
//
// Version 1 is AES-256-GCM (OpenSSL EVP) with a fresh random 96-bit nonce per blob. The
// additional authenticated data is the version byte followed by the caller's associated data,
// so a blob only opens under the master key *and* the context it was sealed for: signing-key
// blobs use KeyBlobAssociatedData() (kid, issuer, issuer kind, tenant, alg), which stops a blob
// from being moved to another key's row or another issuer.
//
// Random nonces keep a single master key safe for far more blobs than a key ring will ever
// seal (the GCM bound is about 2^32 messages per key).
//
// Thread safety: both functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"
#include "identity/master_key.h"

namespace kw::identity {

inline constexpr uint8_t kSealedBoxVersion = 1;
inline constexpr size_t kSealedBoxNonceSize = 12;
inline constexpr size_t kSealedBoxTagSize = 16;
inline constexpr size_t kSealedBoxOverhead = 1 + kSealedBoxNonceSize + kSealedBoxTagSize;

// Seals `plaintext` (any length, including zero) bound to `associated_data`. The blob is
// kSealedBoxOverhead bytes longer than the plaintext. Internal only if OpenSSL fails.
Result<std::string> Seal(const MasterKey& master, std::string_view plaintext,
                         std::string_view associated_data);

// Opens a blob made by Seal. DataLoss for anything that does not authenticate: a blob too short
// or of an unknown version, any altered byte, different associated data, or a different master
// key (GCM cannot tell these apart; a caller that records MasterKey::Fingerprint() next to the
// blob can report a wrong key precisely). The message never includes blob or key bytes.
Result<SecretBytes> Unseal(const MasterKey& master, std::string_view blob,
                           std::string_view associated_data);

// The associated data for a signing key's private-key blob: each field length-prefixed, so no
// two different tuples encode to the same bytes.
std::string KeyBlobAssociatedData(std::string_view kid, std::string_view issuer,
                                  std::string_view issuer_kind, std::string_view tenant_id,
                                  std::string_view alg);

}  // namespace kw::identity
