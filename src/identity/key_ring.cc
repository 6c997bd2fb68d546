#include "identity/key_ring.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/json.h"
#include "core/log.h"
#include "identity/sealed_box.h"

namespace kw::identity {
namespace {

constexpr int64_t kDay = 24 * 3600;

bool Live(SigningKeyState s) {
  return s == SigningKeyState::kPublished || s == SigningKeyState::kActive ||
         s == SigningKeyState::kRetiring;
}

std::string Days(int64_t seconds) {
  if (seconds % kDay == 0) return fmt::format("{} days", seconds / kDay);
  return fmt::format("{:.1f} days", static_cast<double>(seconds) / kDay);
}

std::string BlobAad(const KeyRecord& r) {
  return KeyBlobAssociatedData(r.kid, r.issuer.issuer, token::IssuerKindName(r.issuer.kind),
                               r.issuer.tenant_id, crypto::AlgorithmName(r.alg));
}

}  // namespace

Result<crypto::PrivateKey> UnsealKeyRecord(const MasterKey& master, const KeyRecord& r) {
  const std::string who = fmt::format("key '{}' of {}", r.kid, r.issuer.Describe());
  auto pub = crypto::PublicKey::FromJwk(r.public_jwk);
  if (!pub.ok()) return DataLossError(fmt::format("{}: stored public JWK is invalid", who));
  auto plain = Unseal(master, r.sealed_private, BlobAad(r));
  if (!plain.ok()) {
    return DataLossError(fmt::format(
        "cannot unseal the private key of {}: the sealed blob was altered or moved from another "
        "key",
        who));
  }
  // The OpenSSL message is left out on purpose: nothing about the plaintext goes anywhere.
  auto priv = crypto::PrivateKey::FromPem(plain->view());
  if (!priv.ok()) {
    return DataLossError(fmt::format("{}: the unsealed private key is not a valid key", who));
  }
  if (!priv->public_key().Equals(*pub) || !priv->Supports(r.alg)) {
    return DataLossError(
        fmt::format("{}: the unsealed private key does not match its public JWK", who));
  }
  return std::move(priv).value();
}

// ---- KeyRingPolicy ----

Status KeyRingPolicy::Validate() const {
  if (pre_publication_seconds < 0 || clock_skew_seconds < 0) {
    return InvalidArgumentError("key ring policy: pre-publication period and clock skew must not "
                                "be negative");
  }
  if (rotation_interval_seconds <= 0 || max_token_lifetime_seconds <= 0 ||
      max_key_age_seconds <= 0) {
    return InvalidArgumentError("key ring policy: rotation interval, token lifetime and maximum "
                                "key age must be positive");
  }
  // Overflow-safe: each term is positive and the sum is compared term by term.
  if (pre_publication_seconds > max_key_age_seconds ||
      rotation_interval_seconds > max_key_age_seconds ||
      verify_tail_seconds() > max_key_age_seconds ||
      pre_publication_seconds + rotation_interval_seconds + verify_tail_seconds() >
          max_key_age_seconds) {
    return InvalidArgumentError(fmt::format(
        "key ring policy: pre-publication ({} s) + rotation interval ({} s) + token lifetime and "
        "skew ({} s) exceed the maximum key age ({} s); a key could not live a normal life",
        pre_publication_seconds, rotation_interval_seconds, verify_tail_seconds(),
        max_key_age_seconds));
  }
  if (!(age_warning_fraction > 0.0 && age_warning_fraction < 1.0)) {
    return InvalidArgumentError("key ring policy: age warning fraction must be in (0, 1)");
  }
  return Status::Ok();
}

int64_t KeyRingPolicy::age_warning_seconds() const {
  return static_cast<int64_t>(std::floor(static_cast<double>(max_key_age_seconds) *
                                         age_warning_fraction));
}

// ---- KeyRing ----

struct KeyRing::Entry {
  KeyRecord rec;
  crypto::PublicKey pub;
  std::optional<crypto::PrivateKey> priv;  // held only while the key is live
};

KeyRing::KeyRing(IssuerIdentity issuer, KeyRingPolicy policy, Deps deps)
    : issuer_(std::move(issuer)), policy_(policy), deps_(std::move(deps)) {}

KeyRing::~KeyRing() = default;

Result<std::unique_ptr<KeyRing>> KeyRing::Open(IssuerIdentity issuer, KeyRingPolicy policy,
                                               Deps deps) {
  KW_RETURN_IF_ERROR(issuer.Validate());
  KW_RETURN_IF_ERROR(policy.Validate());
  if (!deps.master) return InvalidArgumentError("key ring needs a master key");
  if (!deps.clock) deps.clock = Clock::System();
  std::unique_ptr<KeyRing> ring(new KeyRing(std::move(issuer), policy, std::move(deps)));
  if (!ring->deps_.store) return ring;

  const IssuerIdentity& me = ring->issuer_;
  const MasterKey& master = *ring->deps_.master;
  KW_ASSIGN_OR_RETURN(std::vector<KeyRecord> records, ring->deps_.store->Load(me.issuer));
  const int64_t now = ring->deps_.clock->NowSeconds();
  std::vector<AuditEvent> events;
  std::lock_guard lock(ring->mu_);
  for (KeyRecord& rec : records) {
    if (!(rec.issuer == me)) {
      return FailedPreconditionError(fmt::format(
          "key '{}' in the key store belongs to {}, but this ring is for {}: consumer and "
          "enterprise keys, and different tenants, never share a ring",
          rec.kid, rec.issuer.Describe(), me.Describe()));
    }
    if (rec.master_key_id != master.Fingerprint()) {
      return FailedPreconditionError(fmt::format(
          "key '{}' of {} was sealed under master key {}, but the loaded master key is {}: "
          "wrong master key file?",
          rec.kid, me.Describe(), rec.master_key_id, master.Fingerprint()));
    }
    auto pub = crypto::PublicKey::FromJwk(rec.public_jwk);
    if (!pub.ok()) {
      return DataLossError(fmt::format("key '{}' of {}: stored public JWK is invalid: {}",
                                       rec.kid, me.Describe(), pub.status().message()));
    }
    if (!pub->Supports(rec.alg)) {
      return DataLossError(fmt::format("key '{}' of {}: stored key cannot be used with {}",
                                       rec.kid, me.Describe(), crypto::AlgorithmName(rec.alg)));
    }
    auto entry = std::make_unique<Entry>(Entry{std::move(rec), std::move(pub).value(), {}});
    const KeyRecord& r = entry->rec;
    if (Live(r.state)) {
      KW_ASSIGN_OR_RETURN(crypto::PrivateKey priv, UnsealKeyRecord(master, r));
      entry->priv = std::move(priv);
      events.push_back(ring->MakeEvent(now, AuditEventType::kKeyUnsealed, r.kid,
                                       fmt::format("{} key loaded from the key store ({})",
                                                   crypto::AlgorithmName(r.alg),
                                                   SigningKeyStateName(r.state))));
    }
    ring->keys_.push_back(std::move(entry));
  }
  ring->EmitLocked(&events, 0);
  return ring;
}

int64_t KeyRing::SigningDeadline(const KeyRecord& r) const {
  return r.not_after - policy_.verify_tail_seconds();
}

AuditEvent KeyRing::MakeEvent(int64_t now, AuditEventType type, const std::string& kid,
                              std::string detail) const {
  AuditEvent e;
  e.time = now;
  e.type = type;
  e.issuer = issuer_.issuer;
  e.issuer_kind = issuer_.kind;
  e.tenant_id = issuer_.tenant_id;
  e.kid = kid;
  e.detail = std::move(detail);
  return e;
}

void KeyRing::EmitLocked(std::vector<AuditEvent>* events, size_t from) const {
  for (size_t i = from; i < events->size(); ++i) {
    const AuditEvent& e = (*events)[i];
    if (deps_.audit) deps_.audit->Record(e);
    bool warn = e.type == AuditEventType::kKeyAgeWarning ||
                e.type == AuditEventType::kKeyRevoked ||
                (e.type == AuditEventType::kKeyGenerated &&
                 e.detail.find("emergency") != std::string::npos);
    Log(warn ? LogLevel::kWarning : LogLevel::kInfo, "key ring of {}: {} '{}': {}",
        issuer_.Describe(), AuditEventTypeName(e.type), e.kid, e.detail);
  }
}

Status KeyRing::PersistLocked(const Entry& e) {
  if (!deps_.store) return Status::Ok();
  return deps_.store->Update(e.rec);
}

Result<KeyRing::Entry*> KeyRing::GenerateLocked(int64_t now, int64_t not_before, bool emergency,
                                                std::vector<AuditEvent>* events) {
  auto priv = crypto::PrivateKey::Generate(policy_.algorithm);
  if (!priv.ok()) return priv.status().WithContext("generating a signing key");
  KeyRecord r;
  do {
    r.kid = Base64UrlEncode(crypto::RandomBytes(16));
  } while (std::any_of(keys_.begin(), keys_.end(),
                       [&](const auto& e) { return e->rec.kid == r.kid; }));
  r.issuer = issuer_;
  r.alg = policy_.algorithm;
  r.created = now;
  r.not_before = emergency ? now : not_before;
  r.not_after = now + policy_.max_key_age_seconds;
  r.state = emergency ? SigningKeyState::kActive : SigningKeyState::kPublished;
  r.activated_at = emergency ? now : 0;
  {
    SecretBytes pem(priv->ToPem());
    KW_ASSIGN_OR_RETURN(r.sealed_private, Seal(*deps_.master, pem.view(), BlobAad(r)));
  }
  r.master_key_id = deps_.master->Fingerprint();
  r.public_jwk = priv->public_key().ToJwk();
  if (deps_.store) {
    // A key that is not safely stored is never used: after a restart it would be gone and
    // every token it signed would stop verifying.
    KW_RETURN_IF_ERROR(deps_.store->Save(r).WithContext("storing a new signing key"));
  }
  crypto::PublicKey pub = priv->public_key();
  keys_.push_back(std::make_unique<Entry>(Entry{std::move(r), std::move(pub), std::move(priv).value()}));
  Entry* e = keys_.back().get();
  const KeyRecord& k = e->rec;
  events->push_back(MakeEvent(
      now, AuditEventType::kKeyGenerated, k.kid,
      emergency ? fmt::format("emergency: no key could sign, so a {} key was generated and "
                              "activated at once, without pre-publication; never used after {}",
                              crypto::AlgorithmName(k.alg), FormatUtc(k.not_after))
                : fmt::format("{} key; signs from {} at the earliest, never used after {}",
                              crypto::AlgorithmName(k.alg), FormatUtc(k.not_before),
                              FormatUtc(k.not_after))));
  events->push_back(MakeEvent(now, AuditEventType::kKeyPublished, k.kid,
                              "in the JWKS and the trust store"));
  if (emergency) {
    events->push_back(MakeEvent(now, AuditEventType::kKeyActivated, k.kid,
                                "signs from now on (emergency key)"));
  }
  return e;
}

void KeyRing::RetireLocked(Entry* e, int64_t now, std::string detail,
                           std::vector<AuditEvent>* events) {
  e->rec.state = SigningKeyState::kRetired;
  e->rec.retired_at = now;
  e->priv.reset();
  events->push_back(MakeEvent(now, AuditEventType::kKeyRetired, e->rec.kid, std::move(detail)));
}

void KeyRing::StartRetiringLocked(Entry* e, int64_t now, std::string detail,
                                  std::vector<AuditEvent>* events) {
  e->rec.state = SigningKeyState::kRetiring;
  e->rec.retiring_at = now;
  e->rec.verify_until = std::min(now + policy_.verify_tail_seconds(), e->rec.not_after);
  events->push_back(MakeEvent(
      now, AuditEventType::kKeyRetiring, e->rec.kid,
      fmt::format("{}; signs no more, verifies until {}", detail,
                  FormatUtc(e->rec.verify_until))));
}

Status KeyRing::AdvanceLocked(int64_t now, std::vector<AuditEvent>* events) {
  std::vector<Entry*> changed;
  auto mark = [&](Entry* e) {
    if (std::find(changed.begin(), changed.end(), e) == changed.end()) changed.push_back(e);
  };
  bool generated = false;  // new keys are saved by GenerateLocked, not in `changed`
  Status first_error;
  auto keep = [&](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };

  // 1. The hard maximum age overrides everything else.
  for (auto& up : keys_) {
    Entry* e = up.get();
    if (Live(e->rec.state) && now >= e->rec.not_after) {
      RetireLocked(e, now,
                   fmt::format("reached the maximum key age of {}",
                               Days(policy_.max_key_age_seconds)),
                   events);
      mark(e);
    }
  }
  // 2. Retiring keys whose last token has expired.
  for (auto& up : keys_) {
    Entry* e = up.get();
    if (e->rec.state == SigningKeyState::kRetiring && now >= e->rec.verify_until) {
      RetireLocked(e, now, "the last token it could have signed has expired", events);
      mark(e);
    }
  }
  // 3. An active key stops signing early enough for its last token to expire before its
  //    maximum age.
  for (auto& up : keys_) {
    Entry* e = up.get();
    if (e->rec.state == SigningKeyState::kActive && now >= SigningDeadline(e->rec)) {
      StartRetiringLocked(e, now, "reached its signing deadline (maximum age minus token lifetime)",
                          events);
      mark(e);
    }
  }
  // 4. Published keys whose pre-publication period is over take over, oldest first.
  std::vector<Entry*> due;
  for (auto& up : keys_) {
    if (up->rec.state == SigningKeyState::kPublished && now >= up->rec.not_before) {
      due.push_back(up.get());
    }
  }
  std::stable_sort(due.begin(), due.end(),
                   [](Entry* a, Entry* b) { return a->rec.not_before < b->rec.not_before; });
  for (Entry* e : due) {
    if (now >= SigningDeadline(e->rec)) {
      RetireLocked(e, now, "never activated: its signing deadline passed while it was published",
                   events);
      mark(e);
      continue;
    }
    for (auto& other : keys_) {
      if (other->rec.state == SigningKeyState::kActive) {
        StartRetiringLocked(other.get(), now, fmt::format("superseded by key '{}'", e->rec.kid),
                            events);
        mark(other.get());
      }
    }
    e->rec.state = SigningKeyState::kActive;
    e->rec.activated_at = now;
    events->push_back(MakeEvent(
        now, AuditEventType::kKeyActivated, e->rec.kid,
        fmt::format("signs from now on; published since {}", FormatUtc(e->rec.created))));
    mark(e);
  }
  // 5. Generate the successor one pre-publication period before it is due.
  Entry* active = nullptr;
  bool pending = false;
  for (auto& up : keys_) {
    if (up->rec.state == SigningKeyState::kActive) active = up.get();
    if (up->rec.state == SigningKeyState::kPublished) pending = true;
  }
  if (!pending) {
    int64_t successor_due = now;  // no active key: a normal key, as soon as allowed
    bool generate = active == nullptr;
    if (active) {
      successor_due = std::min(active->rec.activated_at + policy_.rotation_interval_seconds,
                               SigningDeadline(active->rec));
      generate = now >= successor_due - policy_.pre_publication_seconds;
    }
    if (generate) {
      // A late tick must not shorten the pre-publication period, and an early one waits for
      // the due time: either way the key is in the JWKS at least P before it signs.
      int64_t not_before = std::max(now + policy_.pre_publication_seconds, successor_due);
      auto made = GenerateLocked(now, not_before, /*emergency=*/false, events);
      if (made.ok()) {
        generated = true;
        if (active && not_before >= SigningDeadline(active->rec)) {
          Log(LogLevel::kWarning,
              "key ring of {}: successor '{}' signs only from {}, after the current key's "
              "signing deadline; an emergency key will fill the gap (was Tick() not called?)",
              issuer_.Describe(), (*made)->rec.kid, FormatUtc(not_before));
        }
      } else {
        keep(made.status());
      }
    }
  }
  // 6. Age warnings, once per key, for keys still in the JWKS.
  const int64_t warn_age = policy_.age_warning_seconds();
  for (auto& up : keys_) {
    Entry* e = up.get();
    if (Live(e->rec.state) && e->rec.age_warned_at == 0 && now - e->rec.created >= warn_age) {
      e->rec.age_warned_at = now;
      events->push_back(MakeEvent(
          now, AuditEventType::kKeyAgeWarning, e->rec.kid,
          fmt::format("{} key is {} old ({} while {}); the maximum is {}, reached at {}",
                      crypto::AlgorithmName(e->rec.alg), Days(now - e->rec.created),
                      "still in the JWKS", SigningKeyStateName(e->rec.state),
                      Days(policy_.max_key_age_seconds), FormatUtc(e->rec.not_after))));
      mark(e);
    }
  }

  for (Entry* e : changed) keep(PersistLocked(*e));
  if (!changed.empty() || generated) keep(SyncAllLocked());
  return first_error;
}

Result<std::vector<AuditEvent>> KeyRing::Tick() {
  std::lock_guard lock(mu_);
  std::vector<AuditEvent> events;
  Status s = AdvanceLocked(deps_.clock->NowSeconds(), &events);
  EmitLocked(&events, 0);
  if (!s.ok()) return s;
  return events;
}

Result<ActiveKey> KeyRing::SigningKey() {
  std::lock_guard lock(mu_);
  const int64_t now = deps_.clock->NowSeconds();
  std::vector<AuditEvent> events;
  Status advanced = AdvanceLocked(now, &events);
  if (!advanced.ok()) {
    // Signing goes on with the key the clock allows; the failure (a store write, a successor
    // that could not be generated) is for Tick() callers and the log.
    Log(LogLevel::kError, "key ring of {}: {}", issuer_.Describe(), advanced.ToString());
  }
  Entry* active = nullptr;
  for (auto& up : keys_) {
    if (up->rec.state == SigningKeyState::kActive) active = up.get();
  }
  if (!active) {
    auto made = GenerateLocked(now, now, /*emergency=*/true, &events);
    if (!made.ok()) {
      EmitLocked(&events, 0);
      return made.status();
    }
    active = *made;
    Status synced = SyncAllLocked();
    if (!synced.ok()) {
      Log(LogLevel::kError, "key ring of {}: {}", issuer_.Describe(), synced.ToString());
    }
  }
  if (!active->priv) {
    EmitLocked(&events, 0);
    return InternalError(
        fmt::format("active key '{}' of {} has no private key", active->rec.kid,
                    issuer_.Describe()));
  }
  if (active->rec.first_used_at == 0) {
    active->rec.first_used_at = now;
    events.push_back(MakeEvent(now, AuditEventType::kKeyFirstUsed, active->rec.kid,
                               fmt::format("first signature; in the JWKS since {}",
                                           FormatUtc(active->rec.created))));
    Status s = PersistLocked(*active);
    if (!s.ok()) Log(LogLevel::kError, "key ring of {}: {}", issuer_.Describe(), s.ToString());
  }
  EmitLocked(&events, 0);
  ActiveKey out{active->rec.kid, active->rec.alg, *active->priv, issuer_,
                std::min(now + policy_.max_token_lifetime_seconds, active->rec.not_after)};
  return out;
}

Result<std::string> KeyRing::SignJwt(std::string_view claims_json) {
  int64_t exp = 0;
  {
    json::StrictParser parser(64 << 10, 16);
    auto root = parser.Parse(claims_json);
    if (!root.ok()) return root.status().WithContext("claims to sign");
    auto obj = root->get_object();
    if (obj.error()) return InvalidArgumentError("claims to sign must be a JSON object");
    json::Object o = obj.value_unsafe();
    auto iss = json::GetString(o, "iss");
    if (!iss.ok()) return iss.status().WithContext("claims to sign");
    if (*iss != issuer_.issuer) {
      return InvalidArgumentError(fmt::format(
          "claims name issuer '{}', but this ring signs only for {}", *iss, issuer_.Describe()));
    }
    auto tid = json::FindString(o, "tid");
    if (issuer_.kind == token::IssuerKind::kEnterprise && (!tid || *tid != issuer_.tenant_id)) {
      return InvalidArgumentError(fmt::format(
          "claims must have \"tid\" '{}' for {}", issuer_.tenant_id, issuer_.Describe()));
    }
    if (tid && !issuer_.tenant_id.empty() && *tid != issuer_.tenant_id) {
      return InvalidArgumentError(fmt::format(
          "claims name tenant '{}', but this ring signs only for {}", *tid, issuer_.Describe()));
    }
    auto e = json::GetInt64(o, "exp");
    if (!e.ok()) return e.status().WithContext("claims to sign");
    exp = *e;
  }
  KW_ASSIGN_OR_RETURN(ActiveKey key, SigningKey());
  const int64_t now = deps_.clock->NowSeconds();
  if (exp <= now || exp > key.latest_exp) {
    return InvalidArgumentError(fmt::format(
        "claim \"exp\" {} must be after now ({}) and no later than {} (maximum token lifetime "
        "{} s, key '{}' not used after {})",
        exp, now, key.latest_exp, policy_.max_token_lifetime_seconds, key.kid,
        FormatUtc(key.latest_exp)));
  }
  json::Writer header;
  header.BeginObject()
      .Key("alg").String(crypto::AlgorithmName(key.alg))
      .Key("kid").String(key.kid)
      .Key("typ").String("JWT")
      .EndObject();
  std::string input = Base64UrlEncode(header.str()) + "." + Base64UrlEncode(claims_json);
  KW_ASSIGN_OR_RETURN(std::string sig, key.key.Sign(key.alg, input));
  return input + "." + Base64UrlEncode(sig);
}

Status KeyRing::Revoke(std::string_view kid, std::string_view reason) {
  if (reason.empty()) return InvalidArgumentError("a revocation needs a reason");
  std::lock_guard lock(mu_);
  Entry* e = nullptr;
  for (auto& up : keys_) {
    if (up->rec.kid == kid) e = up.get();
  }
  if (!e) return NotFoundError(fmt::format("key '{}' is not a key of {}", kid, issuer_.Describe()));
  if (e->rec.state == SigningKeyState::kRevoked) return Status::Ok();
  const int64_t now = deps_.clock->NowSeconds();
  SigningKeyState was = e->rec.state;
  e->rec.state = SigningKeyState::kRevoked;
  e->rec.revoked_at = now;
  e->rec.revoked_reason.assign(reason);
  e->priv.reset();
  // The trust stores first: revocation must take effect even if the database is unreachable.
  Status synced = SyncAllLocked();
  Status persisted = PersistLocked(*e);
  std::vector<AuditEvent> events;
  events.push_back(MakeEvent(now, AuditEventType::kKeyRevoked, e->rec.kid,
                             fmt::format("revoked while {}: {}", SigningKeyStateName(was), reason)));
  EmitLocked(&events, 0);
  if (!synced.ok()) return synced;
  if (!persisted.ok()) {
    return persisted.WithContext(fmt::format(
        "key '{}' is revoked in this process and its trust stores, but the revocation was not "
        "stored",
        kid));
  }
  return Status::Ok();
}

Result<std::string> KeyRing::Rotate(bool immediate, std::string_view reason) {
  if (reason.empty()) return InvalidArgumentError("a rotation needs a reason");
  std::lock_guard lock(mu_);
  const int64_t now = deps_.clock->NowSeconds();
  std::vector<AuditEvent> events;
  Status advanced = AdvanceLocked(now, &events);
  if (!advanced.ok()) Log(LogLevel::kError, "key ring of {}: {}", issuer_.Describe(), advanced.ToString());
  size_t from = events.size();
  Entry* pending = nullptr;
  for (auto& up : keys_) {
    if (up->rec.state == SigningKeyState::kPublished) pending = up.get();
  }
  std::vector<Entry*> changed;
  if (!immediate && pending) {
    EmitLocked(&events, 0);
    return pending->rec.kid;
  }
  auto made = GenerateLocked(now, now + policy_.pre_publication_seconds, immediate, &events);
  if (!made.ok()) {
    EmitLocked(&events, 0);
    return made.status();
  }
  if (immediate) {
    for (auto& up : keys_) {
      Entry* e = up.get();
      if (e == *made) continue;
      if (e->rec.state == SigningKeyState::kActive) {
        StartRetiringLocked(e, now, fmt::format("rotated at once to key '{}'", (*made)->rec.kid),
                            &events);
        changed.push_back(e);
      } else if (e->rec.state == SigningKeyState::kPublished) {
        RetireLocked(e, now, fmt::format("superseded unused by key '{}'", (*made)->rec.kid),
                     &events);
        changed.push_back(e);
      }
    }
  }
  for (size_t i = from; i < events.size(); ++i) {
    if (events[i].type != AuditEventType::kKeyGenerated) continue;
    events[i].detail =
        immediate ? fmt::format("{} key generated and activated at once by an operator rotation "
                                "({}); never used after {}",
                                crypto::AlgorithmName((*made)->rec.alg), reason,
                                FormatUtc((*made)->rec.not_after))
                  : events[i].detail + fmt::format(" (operator rotation: {})", reason);
  }
  Status first;
  for (Entry* e : changed) {
    Status s = PersistLocked(*e);
    if (!s.ok() && first.ok()) first = s;
  }
  Status synced = SyncAllLocked();
  EmitLocked(&events, 0);
  if (!synced.ok()) return synced;
  if (!first.ok()) return first;
  return (*made)->rec.kid;
}

Result<std::vector<std::string>> KeyRing::RefreshFromStore() {
  std::vector<std::string> revoked;
  if (!deps_.store) return revoked;
  // Read outside the lock: signing goes on while the database is queried.
  KW_ASSIGN_OR_RETURN(std::vector<KeyRecord> stored, deps_.store->Load(issuer_.issuer));
  std::lock_guard lock(mu_);
  std::vector<AuditEvent> events;
  for (const KeyRecord& r : stored) {
    if (r.state != SigningKeyState::kRevoked || !(r.issuer == issuer_)) continue;
    for (auto& up : keys_) {
      Entry* e = up.get();
      if (e->rec.kid != r.kid || e->rec.state == SigningKeyState::kRevoked) continue;
      SigningKeyState was = e->rec.state;
      e->rec.state = SigningKeyState::kRevoked;
      e->rec.revoked_at = r.revoked_at;
      e->rec.revoked_reason = r.revoked_reason;
      e->priv.reset();
      events.push_back(MakeEvent(deps_.clock->NowSeconds(), AuditEventType::kKeyRevoked, r.kid,
                                 fmt::format("revoked while {} by another process: {}",
                                             SigningKeyStateName(was), r.revoked_reason)));
      revoked.push_back(r.kid);
    }
  }
  if (revoked.empty()) return revoked;
  Status synced = SyncAllLocked();
  EmitLocked(&events, 0);
  if (!synced.ok()) return synced;
  return revoked;
}

bool KeyRing::InJwksLocked(const Entry& e, int64_t now) const {
  const KeyRecord& r = e.rec;
  if (!Live(r.state) || now >= r.not_after) return false;
  return !(r.state == SigningKeyState::kRetiring && now >= r.verify_until);
}

std::string KeyRing::Jwks() const {
  std::lock_guard lock(mu_);
  const int64_t now = deps_.clock->NowSeconds();
  std::string out = "{\"keys\":[";
  bool first = true;
  for (const auto& up : keys_) {
    if (!InJwksLocked(*up, now)) continue;
    const KeyRecord& r = up->rec;
    std::string jwk = up->pub.ToJwk();  // "{...}" with the RFC 7638 members
    jwk.pop_back();
    jwk += ",\"kid\":";
    json::AppendQuoted(&jwk, r.kid);
    jwk += ",\"alg\":";
    json::AppendQuoted(&jwk, crypto::AlgorithmName(r.alg));
    jwk += ",\"use\":\"sig\",\"issuer\":";
    json::AppendQuoted(&jwk, r.issuer.issuer);
    jwk += ",\"issuer_kind\":";
    json::AppendQuoted(&jwk, token::IssuerKindName(r.issuer.kind));
    if (!r.issuer.tenant_id.empty()) {
      jwk += ",\"tid\":";
      json::AppendQuoted(&jwk, r.issuer.tenant_id);
    }
    jwk += "}";
    if (!first) out += ",";
    first = false;
    out += jwk;
  }
  out += "]}";
  return out;
}

token::TrustedKeySpec KeyRing::TrustedSpecLocked(const Entry& e) const {
  const KeyRecord& r = e.rec;
  token::TrustedKeySpec s;
  s.kid = r.kid;
  s.issuer = r.issuer.issuer;
  s.kind = r.issuer.kind;
  s.tenant_id = r.issuer.tenant_id;
  s.alg = r.alg;
  s.key = e.pub;
  s.not_before = r.not_before;
  s.not_after = r.state == SigningKeyState::kRetiring ? std::min(r.verify_until, r.not_after)
                                                      : r.not_after;
  switch (r.state) {
    case SigningKeyState::kPublished:
    case SigningKeyState::kActive:
    case SigningKeyState::kRetiring:
      s.state = token::KeyState::kActive;
      break;
    case SigningKeyState::kRetired:
      s.state = token::KeyState::kRetired;
      break;
    case SigningKeyState::kRevoked:
      s.state = token::KeyState::kRevoked;
      break;
  }
  return s;
}

std::vector<token::TrustedKeySpec> KeyRing::ToTrustedKeys() const {
  std::lock_guard lock(mu_);
  std::vector<token::TrustedKeySpec> out;
  out.reserve(keys_.size());
  for (const auto& up : keys_) out.push_back(TrustedSpecLocked(*up));
  return out;
}

Status KeyRing::SyncLocked(token::TrustStore& store) const {
  Status first_error;
  auto keep = [&](const Status& s) {
    if (!s.ok() && first_error.ok()) first_error = s;
  };
  for (const auto& up : keys_) {
    token::TrustedKeySpec want = TrustedSpecLocked(*up);
    auto have = store.Find(want.kid);
    if (!have) {
      keep(store.Upsert(std::move(want)));
      continue;
    }
    const token::TrustedKeySpec& hs = have->spec();
    if (hs.issuer != want.issuer || hs.kind != want.kind || hs.tenant_id != want.tenant_id) {
      // Upsert replaces by kid alone; never let one issuer's ring take over another's key.
      keep(PermissionDeniedError(fmt::format(
          "trust store already holds kid '{}' for {} issuer '{}'; not replacing it with a key "
          "of {}",
          want.kid, token::IssuerKindName(hs.kind), hs.issuer, issuer_.Describe())));
      continue;
    }
    if (have->state() == token::KeyState::kRevoked) continue;  // final
    if (want.state != token::KeyState::kActive) {
      // SetState flips the state of the very object cached verifications hold.
      if (have->state() != want.state) keep(store.SetState(want.kid, want.state));
      continue;
    }
    bool same = have->state() == want.state && hs.alg == want.alg &&
                hs.not_before == want.not_before && hs.not_after == want.not_after &&
                hs.key && hs.key->Equals(*want.key);
    if (!same) keep(store.Upsert(std::move(want)));
  }
  return first_error;
}

Status KeyRing::SyncAllLocked() const {
  Status first_error;
  for (const auto& ts : trust_stores_) {
    Status s = SyncLocked(*ts);
    if (!s.ok() && first_error.ok()) first_error = s;
  }
  return first_error;
}

Status KeyRing::AttachTrustStore(std::shared_ptr<token::TrustStore> store) {
  if (!store) return InvalidArgumentError("no trust store to attach");
  std::lock_guard lock(mu_);
  KW_RETURN_IF_ERROR(SyncLocked(*store));
  trust_stores_.push_back(std::move(store));
  return Status::Ok();
}

std::vector<KeyRecord> KeyRing::Keys() const {
  std::lock_guard lock(mu_);
  std::vector<KeyRecord> out;
  out.reserve(keys_.size());
  for (const auto& up : keys_) out.push_back(up->rec);
  return out;
}

}  // namespace kw::identity
