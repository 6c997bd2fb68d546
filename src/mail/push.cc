#include "mail/push.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "core/log.h"
#include "mail/json_value.h"

namespace kw::mail {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The most a hub thread sleeps: closed streams are collected at this pace.
constexpr std::chrono::milliseconds kMaxSleep{1000};

bool IsTypeName(std::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
         });
}

int64_t ToInt(std::string_view s) {
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) return 0;
    v = v * 10 + (c - '0');
  }
  return v;
}

// "A1:12,A2:5" -> {A1: 12, A2: 5}; anything malformed is ignored (the client then catches up on
// every account, which is always safe).
std::map<std::string, int64_t, std::less<>> ParseEventId(std::string_view id) {
  std::map<std::string, int64_t, std::less<>> out;
  while (!id.empty()) {
    size_t comma = id.find(',');
    std::string_view part = id.substr(0, comma);
    size_t colon = part.rfind(':');
    if (colon != std::string_view::npos && colon > 0) {
      out[std::string(part.substr(0, colon))] = ToInt(part.substr(colon + 1));
    }
    if (comma == std::string_view::npos) break;
    id.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

Result<PushRequest> ParsePushQuery(const std::map<std::string, std::string, std::less<>>& query) {
  PushRequest out;
  if (auto it = query.find("types"); it != query.end() && it->second != "*") {
    std::string_view list = it->second;
    while (true) {
      size_t comma = list.find(',');
      std::string_view name = list.substr(0, comma);
      if (!IsTypeName(name)) {
        return InvalidArgumentError("types must be \"*\" or a comma-separated list of type names");
      }
      out.types.emplace(name);
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  if (auto it = query.find("closeafter"); it != query.end()) {
    if (it->second == "state") {
      out.close_after_state = true;
    } else if (it->second != "no") {
      return InvalidArgumentError("closeafter must be \"state\" or \"no\"");
    }
  }
  if (auto it = query.find("ping"); it != query.end()) {
    const std::string& p = it->second;
    if (p.empty() || p.size() > 9 ||
        !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgumentError("ping must be a number of seconds");
    }
    out.ping_seconds = std::stoi(p);
  }
  return out;
}

struct PushHub::Sub {
  uint64_t id = 0;
  std::shared_ptr<http::StreamBody> body;
  std::vector<std::string> accounts;
  std::set<std::string> types;  // empty: all
  bool close_after_state = false;
  int ping = 0;
  SteadyClock::time_point last_event;
  // What this stream's client knows (the states as of connecting, then as last pushed).
  // Touched by the hub thread only, once registered.
  std::map<std::string, Txn::PushState> sent;
};

int PushHub::ClampPing(int seconds) {
  if (seconds <= 0) return 0;
  return std::clamp(seconds, kMinPingSeconds, kMaxPingSeconds);
}

PushHub::PushHub(Store* store) : store_(store) {
  store_->SetChangeListener([this](const std::set<std::string>& ids) { Notify(ids); });
  thread_ = std::thread([this] { Run(); });
}

PushHub::~PushHub() {
  store_->SetChangeListener(nullptr);
  std::map<uint64_t, std::shared_ptr<Sub>> subs;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    subs.swap(subs_);
  }
  cv_.notify_all();
  thread_.join();
  for (auto& [id, sub] : subs) sub->body->Finish();
}

size_t PushHub::open_streams() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [id, sub] : subs_) n += sub->body->closed() ? 0 : 1;
  return n;
}

Result<std::shared_ptr<http::StreamBody>> PushHub::Subscribe(PushRequest request) {
  auto sub = std::make_shared<Sub>();
  sub->body = std::make_shared<http::StreamBody>();
  sub->accounts = std::move(request.account_ids);
  sub->types = std::move(request.types);
  sub->close_after_state = request.close_after_state;
  sub->ping = ClampPing(request.ping_seconds);
  sub->last_event = SteadyClock::now();
  // The states as of connecting; the hub compares against them once registered, so a change
  // committed in between is pushed rather than lost.
  KW_RETURN_IF_ERROR(store_->Read([&](Txn& t) -> Status {
    for (const auto& a : sub->accounts) {
      KW_ASSIGN_OR_RETURN(sub->sent[a], t.PushStates(a));
    }
    return Status::Ok();
  }));
  if (!request.last_event_id.empty()) {
    auto seen = ParseEventId(request.last_event_id);
    for (auto& [account, state] : sub->sent) {
      auto it = seen.find(account);
      if (it == seen.end() || it->second != state.modseq) state = Txn::PushState{};
    }
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) return UnavailableError("the push hub is stopping");
    size_t open = 0;
    for (const auto& [id, s] : subs_) open += s->body->closed() ? 0 : 1;
    if (open >= kMaxStreams) {
      return ResourceExhaustedError(fmt::format("at most {} event streams are open", kMaxStreams));
    }
    sub->id = next_id_++;
    subs_.emplace(sub->id, sub);
    dirty_subs_.insert(sub->id);
  }
  cv_.notify_all();
  return sub->body;
}

void PushHub::Notify(const std::set<std::string>& account_ids) {
  {
    std::lock_guard lock(mu_);
    if (subs_.empty()) return;
    dirty_.insert(account_ids.begin(), account_ids.end());
  }
  cv_.notify_all();
}

bool PushHub::SendChanges(Sub& sub, const std::map<std::string, Txn::PushState>& fresh,
                          SteadyClock::time_point now) {
  Value changed = Value::MakeObject();
  bool any = false;
  for (const auto& account : sub.accounts) {
    auto f = fresh.find(account);
    if (f == fresh.end()) continue;
    Txn::PushState& known = sub.sent[account];
    Value types = Value::MakeObject();
    bool moved_any = false;
    for (const auto& [type, state] : f->second.types) {
      auto k = known.types.find(type);
      bool moved;
      if (type == "EmailDelivery") {  // only forward: see Txn::PushStates
        int64_t before = k == known.types.end() ? 0 : ToInt(k->second);
        moved = ToInt(state) > before;
        if (!moved) continue;
      } else {
        moved = k == known.types.end() || k->second != state;
      }
      if (moved) known.types[type] = state;
      if (moved && (sub.types.empty() || sub.types.count(type) != 0)) {
        types.Add(type, state);
        moved_any = true;
      }
    }
    known.modseq = f->second.modseq;
    if (moved_any) {
      changed.Add(account, std::move(types));
      any = true;
    }
  }
  if (!any) return true;
  std::string id;
  for (const auto& account : sub.accounts) {
    if (!id.empty()) id += ',';
    id += fmt::format("{}:{}", account, sub.sent[account].modseq);
  }
  Value event = Value::MakeObject();
  event.Add("@type", "StateChange");
  event.Add("changed", std::move(changed));
  bool ok = sub.body->Write(fmt::format("event: state\nid: {}\ndata: {}\n\n", id, event.Serialize()));
  sub.last_event = now;
  if (ok && sub.close_after_state) sub.body->Finish();
  return ok;
}

void PushHub::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    auto wake = SteadyClock::now() + kMaxSleep;
    for (const auto& [id, sub] : subs_) {
      if (sub->ping > 0) wake = std::min(wake, sub->last_event + std::chrono::seconds(sub->ping));
    }
    cv_.wait_until(lock, wake, [&] { return stop_ || !dirty_.empty() || !dirty_subs_.empty(); });
    if (stop_) break;
    std::set<std::string> dirty;
    dirty.swap(dirty_);
    std::set<uint64_t> dirty_subs;
    dirty_subs.swap(dirty_subs_);
    std::vector<std::shared_ptr<Sub>> subs;
    for (auto it = subs_.begin(); it != subs_.end();) {
      if (it->second->body->closed()) {
        it = subs_.erase(it);
      } else {
        subs.push_back(it->second);
        ++it;
      }
    }
    lock.unlock();

    std::set<std::string> need;
    for (const auto& sub : subs) {
      bool all = dirty_subs.count(sub->id) != 0;
      for (const auto& a : sub->accounts) {
        if (all || dirty.count(a) != 0) need.insert(a);
      }
    }
    std::map<std::string, Txn::PushState> fresh;
    if (!need.empty()) {
      Status s = store_->Read([&](Txn& t) -> Status {
        for (const auto& a : need) {
          auto st = t.PushStates(a);
          if (st.ok()) fresh.emplace(a, std::move(*st));  // a deleted account just stops moving
        }
        return Status::Ok();
      });
      if (!s.ok()) Log(LogLevel::kWarning, "mail push: reading states failed: {}", s.ToString());
    }
    auto now = SteadyClock::now();
    for (const auto& sub : subs) {
      if (!fresh.empty() && !SendChanges(*sub, fresh, now)) continue;
      if (sub->ping > 0 && now >= sub->last_event + std::chrono::seconds(sub->ping)) {
        sub->body->Write(fmt::format("event: ping\ndata: {{\"interval\":{}}}\n\n", sub->ping));
        sub->last_event = now;
      }
    }
    lock.lock();
  }
}

}  // namespace kw::mail
