// TrustStore: the keys a verifier may accept, each bound to exactly one issuer.
//
// The 2023 failure was a key set with no owner per key: any published key could sign for any
// issuer. Here a key cannot exist without its issuer, issuer kind (consumer or enterprise), tenant
// (enterprise), pinned algorithm, validity window and state, and kids are unique across the whole
// store so a kid can never be ambiguous between issuers.
//
// An issuer is either exact ("https://id.example/9188040d-.../v2.0") or a multi-tenant template
// containing "{tenantid}" once ("https://id.example/{tenantid}/v2.0", enterprise only), which
// matches a token's "iss" only after "{tenantid}" is replaced by the token's own "tid".
//
// Thread safety: all methods are thread-safe. Find() is the hot path (a shared lock and one hash
// lookup). Key state changes are visible to every reader at once, and listeners (such as the
// verified-token cache) are told synchronously before SetState returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "crypto/crypto.h"

namespace kw::token {

enum class IssuerKind { kConsumer, kEnterprise };
enum class KeyState { kActive = 0, kRetired = 1, kRevoked = 2 };

std::string_view IssuerKindName(IssuerKind k);  // "consumer" / "enterprise"
std::string_view KeyStateName(KeyState s);      // "active" / "retired" / "revoked"
std::optional<IssuerKind> ParseIssuerKind(std::string_view s);
std::optional<KeyState> ParseKeyState(std::string_view s);

inline constexpr std::string_view kTenantPlaceholder = "{tenantid}";

struct TrustedKeySpec {
  std::string kid;
  std::string issuer;              // exact, or a template with "{tenantid}" (enterprise only)
  IssuerKind kind = IssuerKind::kEnterprise;
  std::string tenant_id;           // required for exact enterprise issuers; empty for templates
  crypto::Algorithm alg = crypto::Algorithm::kES256;  // the only algorithm this key verifies
  std::optional<crypto::PublicKey> key;
  int64_t not_before = 0;          // Unix seconds; 0 = no lower bound
  int64_t not_after = 0;           // Unix seconds; 0 = no upper bound
  KeyState state = KeyState::kActive;
};

class TrustedKey {
 public:
  explicit TrustedKey(TrustedKeySpec spec) : spec_(std::move(spec)), state_(spec_.state) {}

  const TrustedKeySpec& spec() const { return spec_; }
  const std::string& kid() const { return spec_.kid; }
  const crypto::PublicKey& key() const { return *spec_.key; }
  KeyState state() const { return state_.load(std::memory_order_acquire); }
  bool is_template() const { return spec_.issuer.find(kTenantPlaceholder) != std::string::npos; }

  // True if this key may sign a token with this "iss" and "tid": the key's issuer, after
  // "{tenantid}" is replaced by `tid`, equals `iss`, and an exact enterprise issuer's tenant
  // equals `tid`. This is the check whose absence let a consumer key open enterprise mail.
  bool BoundTo(std::string_view iss, std::string_view tid) const;

 private:
  friend class TrustStore;
  TrustedKeySpec spec_;
  std::atomic<KeyState> state_;
};

class TrustStore {
 public:
  TrustStore() = default;
  TrustStore(const TrustStore&) = delete;
  TrustStore& operator=(const TrustStore&) = delete;

  // Adds a key. Errors: InvalidArgument (missing kid, issuer or key; template on a consumer key;
  // enterprise exact issuer without tenant; key type not matching alg), AlreadyExists (kid taken,
  // by any issuer).
  Status Add(TrustedKeySpec spec);
  // Adds or replaces by kid (used by reloads). Same validation as Add.
  Status Upsert(TrustedKeySpec spec);
  // Changes a key's state; listeners run before this returns. NotFound for an unknown kid.
  // Revoked is final: a revoked key cannot be made active or retired again.
  Status SetState(std::string_view kid, KeyState state);
  Status Remove(std::string_view kid);

  // The key with this kid, or null.
  std::shared_ptr<const TrustedKey> Find(std::string_view kid) const;
  std::vector<std::shared_ptr<const TrustedKey>> Keys() const;
  size_t size() const;

  // Called with a key whenever its state changes (revoke, retire) or it is removed.
  using Listener = std::function<void(const TrustedKey&)>;
  void AddListener(Listener l);

  // Unknown kid: the verifier calls MaybeReload(), which runs the hook at most once per
  // `min_interval_ms` (across all threads) and reports whether it ran. The hook typically
  // re-reads a JWKS or the identity database and Upserts keys.
  void SetReloadHook(std::function<Status(TrustStore&)> hook, int64_t min_interval_ms,
                     const Clock* clock = Clock::System());
  bool MaybeReload();
  uint64_t reload_count() const { return reloads_.load(); }

  // ---- Files ----
  // Trust-store JSON:
  //   {"keys":[{"kid":"k1","issuer":"https://...","kind":"enterprise","tenant":"t1",
  //             "alg":"ES256","not_before":0,"not_after":0,"state":"active","jwk":{...}}]}
  static Result<std::unique_ptr<TrustStore>> FromJson(std::string_view text);
  std::string ToJson() const;
  // A JWKS ({"keys":[...]}): each key needs "kid"; its issuer is its own "issuer" member (as
  // Keyward's identity service publishes) or `default_issuer`; its algorithm its "alg" member
  // (EC and OKP keys may omit it). Keys with a private part are refused.
  static Result<std::unique_ptr<TrustStore>> FromJwks(std::string_view text,
                                                      std::string_view default_issuer,
                                                      IssuerKind kind,
                                                      std::string_view tenant_id);
  Status AddJwks(std::string_view text, std::string_view default_issuer, IssuerKind kind,
                 std::string_view tenant_id);

 private:
  Status Validate(const TrustedKeySpec& spec) const;
  void Notify(const TrustedKey& key);

  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<TrustedKey>, Hash, std::equal_to<>> keys_;
  std::mutex listeners_mu_;
  std::vector<Listener> listeners_;

  std::mutex reload_mu_;
  std::function<Status(TrustStore&)> reload_hook_;
  int64_t reload_interval_ms_ = 30'000;
  const Clock* reload_clock_ = Clock::System();
  std::atomic<int64_t> last_reload_ms_{INT64_MIN / 2};
  std::atomic<uint64_t> reloads_{0};
};

}  // namespace kw::token
