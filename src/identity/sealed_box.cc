#include "identity/sealed_box.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <climits>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "crypto/crypto.h"

namespace kw::identity {
namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// EVP lengths are ints; a secret this large is a caller bug, refused rather than truncated.
constexpr size_t kMaxLength = INT_MAX / 2;

Status SealFailed() {
  return InternalError(
      fmt::format("sealing failed in OpenSSL: {}", crypto::TakeOpenSslError()));
}

Status NotAuthentic() {
  // One message for every case: telling a wrong key from an altered byte would help nobody but
  // an attacker probing the store.
  return DataLossError(
      "sealed data does not authenticate: wrong master key, wrong context (associated data), "
      "or altered bytes");
}

}  // namespace

Result<std::string> Seal(const MasterKey& master, std::string_view plaintext,
                         std::string_view associated_data) {
  if (plaintext.size() > kMaxLength || associated_data.size() > kMaxLength) {
    return InvalidArgumentError("sealed box: input too large");
  }
  const EVP_CIPHER* cipher = Aes256Gcm();
  if (!cipher) return SealFailed();
  std::string blob(kSealedBoxOverhead + plaintext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(blob.data());
  out[0] = kSealedBoxVersion;
  unsigned char* nonce = out + 1;
  unsigned char* ct = nonce + kSealedBoxNonceSize;
  unsigned char* tag = ct + plaintext.size();
  if (RAND_bytes(nonce, kSealedBoxNonceSize) != 1) return SealFailed();

  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx ||
      EVP_EncryptInit_ex2(ctx.get(), cipher, master.bytes_for_sealing(), nonce, nullptr) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, out, 1) != 1 ||
      (!associated_data.empty() &&
       EVP_EncryptUpdate(ctx.get(), nullptr, &n, U(associated_data),
                         static_cast<int>(associated_data.size())) != 1)) {
    return SealFailed();
  }
  int written = 0;
  if (!plaintext.empty()) {
    if (EVP_EncryptUpdate(ctx.get(), ct, &n, U(plaintext), static_cast<int>(plaintext.size())) !=
        1) {
      return SealFailed();
    }
    written = n;
  }
  if (EVP_EncryptFinal_ex(ctx.get(), ct + written, &n) != 1) return SealFailed();
  written += n;
  if (static_cast<size_t>(written) != plaintext.size() ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kSealedBoxTagSize, tag) != 1) {
    return SealFailed();
  }
  return blob;
}

Result<SecretBytes> Unseal(const MasterKey& master, std::string_view blob,
                           std::string_view associated_data) {
  if (blob.size() < kSealedBoxOverhead || blob.size() > kMaxLength ||
      associated_data.size() > kMaxLength) {
    return NotAuthentic();
  }
  if (static_cast<uint8_t>(blob[0]) != kSealedBoxVersion) return NotAuthentic();
  const EVP_CIPHER* cipher = Aes256Gcm();
  if (!cipher) return SealFailed();
  const unsigned char* in = U(blob);
  const unsigned char* nonce = in + 1;
  const unsigned char* ct = nonce + kSealedBoxNonceSize;
  size_t ct_len = blob.size() - kSealedBoxOverhead;
  // The tag is passed to OpenSSL through a non-const pointer; copy it.
  unsigned char tag[kSealedBoxTagSize];
  std::memcpy(tag, ct + ct_len, kSealedBoxTagSize);

  SecretBytes plain(std::string(ct_len, '\0'));
  auto* pt = reinterpret_cast<unsigned char*>(plain.data());
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx ||
      EVP_DecryptInit_ex2(ctx.get(), cipher, master.bytes_for_sealing(), nonce, nullptr) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, in, 1) != 1 ||
      (!associated_data.empty() &&
       EVP_DecryptUpdate(ctx.get(), nullptr, &n, U(associated_data),
                         static_cast<int>(associated_data.size())) != 1)) {
    return SealFailed();
  }
  int written = 0;
  if (ct_len > 0) {
    if (EVP_DecryptUpdate(ctx.get(), pt, &n, ct, static_cast<int>(ct_len)) != 1) {
      return NotAuthentic();
    }
    written = n;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kSealedBoxTagSize, tag) != 1) {
    return SealFailed();
  }
  if (EVP_DecryptFinal_ex(ctx.get(), pt + written, &n) != 1) {
    crypto::TakeOpenSslError();  // a failed tag check leaves nothing useful in the queue
    return NotAuthentic();       // `plain` is cleansed on the way out
  }
  return plain;
}

std::string KeyBlobAssociatedData(std::string_view kid, std::string_view issuer,
                                  std::string_view issuer_kind, std::string_view tenant_id,
                                  std::string_view alg) {
  std::string out = "keyward signing key v1";
  for (std::string_view field : {kid, issuer, issuer_kind, tenant_id, alg}) {
    uint32_t len = static_cast<uint32_t>(field.size());
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(len >> shift));
    out.append(field);
  }
  return out;
}

}  // namespace kw::identity
