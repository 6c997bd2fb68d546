#include "token/trust_store.h"

#include <fmt/format.h>

#include "core/json.h"
#include "core/log.h"

namespace kw::token {

std::string_view IssuerKindName(IssuerKind k) {
  return k == IssuerKind::kConsumer ? "consumer" : "enterprise";
}

std::string_view KeyStateName(KeyState s) {
  switch (s) {
    case KeyState::kActive: return "active";
    case KeyState::kRetired: return "retired";
    case KeyState::kRevoked: return "revoked";
  }
  return "?";
}

std::optional<IssuerKind> ParseIssuerKind(std::string_view s) {
  if (s == "consumer") return IssuerKind::kConsumer;
  if (s == "enterprise") return IssuerKind::kEnterprise;
  return std::nullopt;
}

std::optional<KeyState> ParseKeyState(std::string_view s) {
  if (s == "active") return KeyState::kActive;
  if (s == "retired") return KeyState::kRetired;
  if (s == "revoked") return KeyState::kRevoked;
  return std::nullopt;
}

bool TrustedKey::BoundTo(std::string_view iss, std::string_view tid) const {
  const std::string& ki = spec_.issuer;
  size_t p = ki.find(kTenantPlaceholder);
  if (p == std::string::npos) {
    if (iss != ki) return false;
    // An exact enterprise issuer names one tenant; the token's tid must be it.
    if (spec_.kind == IssuerKind::kEnterprise && tid != spec_.tenant_id) return false;
    if (spec_.kind == IssuerKind::kConsumer && !spec_.tenant_id.empty() && !tid.empty() &&
        tid != spec_.tenant_id) {
      return false;
    }
    return true;
  }
  // Template: iss must be prefix + tid + suffix, with a non-empty tid.
  if (tid.empty()) return false;
  std::string_view prefix(ki.data(), p);
  std::string_view suffix(ki.data() + p + kTenantPlaceholder.size(),
                          ki.size() - p - kTenantPlaceholder.size());
  return iss.size() == prefix.size() + tid.size() + suffix.size() && iss.starts_with(prefix) &&
         iss.ends_with(suffix) && iss.substr(prefix.size(), tid.size()) == tid;
}

Status TrustStore::Validate(const TrustedKeySpec& s) const {
  if (s.kid.empty()) return InvalidArgumentError("trusted key has no kid");
  if (s.issuer.empty()) return InvalidArgumentError(fmt::format("key '{}' has no issuer", s.kid));
  if (!s.key) return InvalidArgumentError(fmt::format("key '{}' has no public key", s.kid));
  if (!s.key->Supports(s.alg)) {
    return InvalidArgumentError(fmt::format("key '{}' is {} but pinned to {}", s.kid,
                                            crypto::KeyTypeName(s.key->type()),
                                            crypto::AlgorithmName(s.alg)));
  }
  size_t p = s.issuer.find(kTenantPlaceholder);
  if (p != std::string::npos) {
    if (s.kind == IssuerKind::kConsumer) {
      return InvalidArgumentError(
          fmt::format("key '{}': a consumer issuer cannot be a tenant template", s.kid));
    }
    if (s.issuer.find(kTenantPlaceholder, p + 1) != std::string::npos) {
      return InvalidArgumentError(fmt::format("key '{}': issuer has {{tenantid}} twice", s.kid));
    }
    if (!s.tenant_id.empty()) {
      return InvalidArgumentError(
          fmt::format("key '{}': a template issuer takes its tenant from the token", s.kid));
    }
  } else if (s.kind == IssuerKind::kEnterprise && s.tenant_id.empty()) {
    return InvalidArgumentError(
        fmt::format("key '{}': an enterprise key with an exact issuer needs its tenant", s.kid));
  }
  if (s.not_before && s.not_after && s.not_after <= s.not_before) {
    return InvalidArgumentError(fmt::format("key '{}': not_after is not after not_before", s.kid));
  }
  return Status::Ok();
}

Status TrustStore::Add(TrustedKeySpec spec) {
  KW_RETURN_IF_ERROR(Validate(spec));
  std::unique_lock lock(mu_);
  if (keys_.count(spec.kid)) {
    return AlreadyExistsError(fmt::format("kid '{}' is already in the trust store", spec.kid));
  }
  std::string kid = spec.kid;
  keys_.emplace(std::move(kid), std::make_shared<TrustedKey>(std::move(spec)));
  return Status::Ok();
}

Status TrustStore::Upsert(TrustedKeySpec spec) {
  KW_RETURN_IF_ERROR(Validate(spec));
  std::shared_ptr<TrustedKey> old;
  {
    std::unique_lock lock(mu_);
    auto it = keys_.find(spec.kid);
    if (it != keys_.end()) {
      // Revocation is final, even against a reload that still lists the key as active.
      if (it->second->state() == KeyState::kRevoked) spec.state = KeyState::kRevoked;
      old = it->second;
      std::string kid = spec.kid;
      it->second = std::make_shared<TrustedKey>(std::move(spec));
    } else {
      std::string kid = spec.kid;
      keys_.emplace(std::move(kid), std::make_shared<TrustedKey>(std::move(spec)));
    }
  }
  if (old) Notify(*old);  // cached verifications under the replaced entry are dropped
  return Status::Ok();
}

Status TrustStore::SetState(std::string_view kid, KeyState state) {
  std::shared_ptr<TrustedKey> key;
  {
    std::unique_lock lock(mu_);
    auto it = keys_.find(kid);
    if (it == keys_.end()) return NotFoundError(fmt::format("no key with kid '{}'", kid));
    key = it->second;
    if (key->state() == KeyState::kRevoked && state != KeyState::kRevoked) {
      return FailedPreconditionError(fmt::format("key '{}' is revoked; revocation is final", kid));
    }
    key->state_.store(state, std::memory_order_release);
  }
  Notify(*key);
  return Status::Ok();
}

Status TrustStore::Remove(std::string_view kid) {
  std::shared_ptr<TrustedKey> key;
  {
    std::unique_lock lock(mu_);
    auto it = keys_.find(kid);
    if (it == keys_.end()) return NotFoundError(fmt::format("no key with kid '{}'", kid));
    key = it->second;
    // Anyone still holding the key (a cache entry) must see it as unusable.
    key->state_.store(KeyState::kRetired, std::memory_order_release);
    keys_.erase(it);
  }
  Notify(*key);
  return Status::Ok();
}

std::shared_ptr<const TrustedKey> TrustStore::Find(std::string_view kid) const {
  std::shared_lock lock(mu_);
  auto it = keys_.find(kid);
  if (it == keys_.end()) return nullptr;
  return it->second;
}

std::vector<std::shared_ptr<const TrustedKey>> TrustStore::Keys() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<const TrustedKey>> out;
  out.reserve(keys_.size());
  for (auto& [kid, key] : keys_) out.push_back(key);
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a->kid() < b->kid(); });
  return out;
}

size_t TrustStore::size() const {
  std::shared_lock lock(mu_);
  return keys_.size();
}

void TrustStore::AddListener(Listener l) {
  std::lock_guard lock(listeners_mu_);
  listeners_.push_back(std::move(l));
}

void TrustStore::Notify(const TrustedKey& key) {
  std::vector<Listener> ls;
  {
    std::lock_guard lock(listeners_mu_);
    ls = listeners_;
  }
  for (auto& l : ls) l(key);
}

void TrustStore::SetReloadHook(std::function<Status(TrustStore&)> hook, int64_t min_interval_ms,
                               const Clock* clock) {
  std::lock_guard lock(reload_mu_);
  reload_hook_ = std::move(hook);
  reload_interval_ms_ = min_interval_ms;
  reload_clock_ = clock;
}

bool TrustStore::MaybeReload() {
  std::function<Status(TrustStore&)> hook;
  {
    std::lock_guard lock(reload_mu_);
    if (!reload_hook_) return false;
    int64_t now = reload_clock_->NowMillis();
    // Rate limit: a flood of tokens with random kids must not turn into a flood of reloads.
    if (now - last_reload_ms_.load() < reload_interval_ms_) return false;
    last_reload_ms_.store(now);
    hook = reload_hook_;
  }
  Status s = hook(*this);
  reloads_.fetch_add(1);
  if (!s.ok()) Log(LogLevel::kWarning, "trust store reload failed: {}", s.ToString());
  return s.ok();
}

// ---- Files ----

namespace {

Result<TrustedKeySpec> SpecFromJwk(json::Object jwk, std::string_view default_issuer,
                                   IssuerKind kind, std::string_view tenant_id) {
  TrustedKeySpec spec;
  KW_ASSIGN_OR_RETURN(std::string_view kid, json::GetString(jwk, "kid"));
  spec.kid.assign(kid);
  auto fail = [&](const Status& s) { return s.WithContext(fmt::format("key '{}'", spec.kid)); };
  if (json::Has(jwk, "d")) {
    return InvalidArgumentError(
        fmt::format("key '{}' contains private key material; refusing to trust it", spec.kid));
  }
  auto pub = crypto::PublicKey::FromJwkObject(jwk);
  if (!pub.ok()) return fail(pub.status());
  spec.key = std::move(pub).value();
  if (auto alg_s = json::FindString(jwk, "alg")) {
    spec.alg = *crypto::ParseAlgorithm(*alg_s);  // FromJwkObject validated it
  } else if (spec.key->type() == crypto::KeyType::kEC) {
    spec.alg = crypto::Algorithm::kES256;
  } else if (spec.key->type() == crypto::KeyType::kOKP) {
    spec.alg = crypto::Algorithm::kEdDSA;
  } else {
    return InvalidArgumentError(fmt::format(
        "key '{}': an RSA key needs \"alg\" (RS256 or PS256) so that it can be pinned", spec.kid));
  }
  if (auto iss = json::FindString(jwk, "issuer")) {
    spec.issuer.assign(*iss);
  } else {
    spec.issuer.assign(default_issuer);
  }
  if (spec.issuer.empty()) {
    return InvalidArgumentError(fmt::format(
        "key '{}' has no \"issuer\" member and no default issuer was given", spec.kid));
  }
  spec.kind = kind;
  if (auto k = json::FindString(jwk, "issuer_kind")) {
    auto parsed = ParseIssuerKind(*k);
    if (!parsed) return InvalidArgumentError(fmt::format("key '{}': bad issuer_kind", spec.kid));
    spec.kind = *parsed;
  }
  spec.tenant_id.assign(tenant_id);
  if (auto t = json::FindString(jwk, "tid")) spec.tenant_id.assign(*t);
  if (spec.issuer.find(kTenantPlaceholder) != std::string::npos) spec.tenant_id.clear();
  return spec;
}

Result<int64_t> GetInt(json::Object o, std::string_view key) {
  auto el = o.at_key(key);
  if (el.error()) return int64_t{0};
  auto v = el.value_unsafe().get_int64();
  if (v.error()) return InvalidArgumentError(fmt::format("'{}' must be an integer", key));
  return v.value_unsafe();
}

}  // namespace

Status TrustStore::AddJwks(std::string_view text, std::string_view default_issuer,
                           IssuerKind kind, std::string_view tenant_id) {
  json::StrictParser parser(4 << 20, 16);
  KW_ASSIGN_OR_RETURN(json::Element root, parser.Parse(text));
  auto keys = root.at_key("keys").get_array();
  if (keys.error()) return InvalidArgumentError("JWKS must be an object with a \"keys\" array");
  json::Array arr = keys.value_unsafe();
  size_t index = 0;
  for (json::Element k : arr) {
    auto obj = k.get_object();
    if (obj.error()) return InvalidArgumentError(fmt::format("JWKS keys[{}] is not an object", index));
    auto spec = SpecFromJwk(obj.value_unsafe(), default_issuer, kind, tenant_id);
    if (!spec.ok()) return spec.status().WithContext(fmt::format("JWKS keys[{}]", index));
    KW_RETURN_IF_ERROR(Add(std::move(spec).value()).WithContext(fmt::format("JWKS keys[{}]", index)));
    ++index;
  }
  return Status::Ok();
}

Result<std::unique_ptr<TrustStore>> TrustStore::FromJwks(std::string_view text,
                                                         std::string_view default_issuer,
                                                         IssuerKind kind,
                                                         std::string_view tenant_id) {
  auto store = std::make_unique<TrustStore>();
  KW_RETURN_IF_ERROR(store->AddJwks(text, default_issuer, kind, tenant_id));
  return store;
}

Result<std::unique_ptr<TrustStore>> TrustStore::FromJson(std::string_view text) {
  json::StrictParser parser(4 << 20, 16);
  KW_ASSIGN_OR_RETURN(json::Element root, parser.Parse(text));
  auto keys = root.at_key("keys").get_array();
  if (keys.error()) return InvalidArgumentError("trust store must be an object with a \"keys\" array");
  auto store = std::make_unique<TrustStore>();
  json::Array arr = keys.value_unsafe();
  size_t index = 0;
  for (json::Element k : arr) {
    auto ctx = fmt::format("trust store keys[{}]", index++);
    auto obj_r = k.get_object();
    if (obj_r.error()) return InvalidArgumentError(ctx + " is not an object");
    json::Object o = obj_r.value_unsafe();
    TrustedKeySpec spec;
    auto kid = json::GetString(o, "kid");
    if (!kid.ok()) return kid.status().WithContext(ctx);
    spec.kid.assign(*kid);
    auto issuer = json::GetString(o, "issuer");
    if (!issuer.ok()) return issuer.status().WithContext(ctx);
    spec.issuer.assign(*issuer);
    auto kind_s = json::GetString(o, "kind");
    if (!kind_s.ok()) return kind_s.status().WithContext(ctx);
    auto kind = ParseIssuerKind(*kind_s);
    if (!kind) return InvalidArgumentError(ctx + ": kind must be 'consumer' or 'enterprise'");
    spec.kind = *kind;
    if (auto t = json::FindString(o, "tenant")) spec.tenant_id.assign(*t);
    auto alg_s = json::GetString(o, "alg");
    if (!alg_s.ok()) return alg_s.status().WithContext(ctx);
    auto alg = crypto::ParseAlgorithm(*alg_s);
    if (!alg) return InvalidArgumentError(fmt::format("{}: unsupported alg '{}'", ctx, *alg_s));
    spec.alg = *alg;
    auto nb = GetInt(o, "not_before");
    if (!nb.ok()) return nb.status().WithContext(ctx);
    spec.not_before = *nb;
    auto na = GetInt(o, "not_after");
    if (!na.ok()) return na.status().WithContext(ctx);
    spec.not_after = *na;
    if (auto st = json::FindString(o, "state")) {
      auto state = ParseKeyState(*st);
      if (!state) return InvalidArgumentError(ctx + ": state must be active, retired or revoked");
      spec.state = *state;
    }
    auto jwk = o.at_key("jwk").get_object();
    if (jwk.error()) return InvalidArgumentError(ctx + ": \"jwk\" object is missing");
    if (json::Has(jwk.value_unsafe(), "d")) {
      return InvalidArgumentError(ctx + ": \"jwk\" contains private key material");
    }
    auto pub = crypto::PublicKey::FromJwkObject(jwk.value_unsafe());
    if (!pub.ok()) return pub.status().WithContext(ctx);
    spec.key = std::move(pub).value();
    KW_RETURN_IF_ERROR(store->Add(std::move(spec)).WithContext(ctx));
  }
  return store;
}

std::string TrustStore::ToJson() const {
  json::Writer w;
  w.BeginObject().Key("keys").BeginArray();
  for (auto& k : Keys()) {
    const auto& s = k->spec();
    w.BeginObject()
        .Key("kid").String(s.kid)
        .Key("issuer").String(s.issuer)
        .Key("kind").String(IssuerKindName(s.kind));
    if (!s.tenant_id.empty()) w.Key("tenant").String(s.tenant_id);
    w.Key("alg").String(crypto::AlgorithmName(s.alg))
        .Key("not_before").Int(s.not_before)
        .Key("not_after").Int(s.not_after)
        .Key("state").String(KeyStateName(k->state()))
        .Key("jwk").Raw(s.key->ToJwk())
        .EndObject();
  }
  w.EndArray().EndObject();
  return w.Take();
}

}  // namespace kw::token
