// libFuzzer target: arbitrary bytes as a JMAP API request body (mail/jmap.h Processor::Process)
// against a store with two tenants' accounts and a few messages.
//
// Invariants (a violation aborts):
//  - Process never crashes and answers 200, 400, 429 or 503 (503 never here: the writer works).
//  - Every answer is strict JSON; a 200 is {"methodResponses":[[name, object, id]...],
//    "sessionState":...} with one response or more per call; an error answer is problem details
//    with a "type" of urn:ietf:params:jmap:error:*.
//  - Tenant isolation: the caller (a user of tenant A) never receives anything from tenant B's
//    account: its Message-ID, subject and body text never appear in a response (unless the input
//    itself carries them, e.g. through Core/echo), and no audit record of a Succeeded call names
//    tenant B.
//
// So that the fuzzer can name real accounts, "$A" and "$B" in the input are replaced by the
// account ids of tenant A's user and of tenant B's user before the request is processed.
// The store lives in a temporary directory for the whole run; inputs may change tenant A's data
// (that is part of what is fuzzed).
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "mail/jmap.h"
#include "mail/json_value.h"
#include "mail/store.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

class CheckingWriter final : public kw::audit::AuditWriter {
 public:
  kw::Result<uint64_t> Append(kw::audit::AuditRecord r) override {
    Check(!(r.result == "Succeeded" && r.tenant_id == "tenant-b"));
    return ++n_;
  }

 private:
  uint64_t n_ = 0;
};

struct World {
  kw::FakeClock clock;
  CheckingWriter audit;
  std::unique_ptr<kw::mail::Store> store;
  std::unique_ptr<kw::mail::Processor> processor;
  kw::mail::Principal alice;
  std::string alice_account, bob_account;

  World() {
    char dir[] = "/tmp/kw-jmap-fuzz-XXXXXX";
    Check(::mkdtemp(dir) != nullptr);
    kw::mail::StoreOptions o;
    o.path = std::string(dir) + "/mail.db";
    o.clock = &clock;
    store = std::move(kw::mail::Store::Open(o).value());
    auto a = store->EnsureAccount("tenant-a", "alice", "alice@a.test", "alice@a.test").value();
    auto b = store->EnsureAccount("tenant-b", "bob", "bob@b.test", "bob@b.test").value();
    alice_account = a.id;
    bob_account = b.id;
    Check(store->Deliver(a.id, "From: bob@b.test\r\nTo: alice@a.test\r\nSubject: hello\r\n"
                               "Message-ID: <m1@b.test>\r\n\r\nhi there\r\n").ok());
    Check(store->Deliver(b.id, "From: x@b.test\r\nTo: bob@b.test\r\nSubject: zzsecretzz\r\n"
                               "Message-ID: <secret@b.test>\r\n\r\nclassified\r\n").ok());
    kw::mail::JmapLimits limits;
    limits.max_size_request = 1 << 20;
    processor = std::make_unique<kw::mail::Processor>(store.get(), &audit, limits, &clock);
    alice.tenant_id = "tenant-a";
    alice.user_id = "alice";
    alice.client_app_id = "web";
  }
};

World& TheWorld() {
  static World* w = new World();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  std::string in(reinterpret_cast<const char*>(data), size);
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"$A", w.alice_account},
                                 std::pair<std::string, std::string>{"$B", w.bob_account}}) {
    for (size_t p = in.find(from); p != std::string::npos; p = in.find(from, p + to.size())) {
      in.replace(p, from.size(), to);
    }
  }
  kw::audit::AuditRecord base;
  base.user_id = "alice";
  kw::mail::JmapResponse r = w.processor->Process(w.alice, base, in);
  Check(r.status == 200 || r.status == 400 || r.status == 429);
  auto v = kw::mail::ParseJson(r.body);
  Check(v.ok() && v->is_object());
  for (std::string_view secret : {"secret@b.test", "zzsecretzz", "classified"}) {
    if (in.find(secret) == std::string::npos) Check(r.body.find(secret) == std::string::npos);
  }
  if (r.status == 200) {
    const kw::mail::Value* responses = v->Find("methodResponses");
    Check(responses && responses->is_array());
    for (const auto& m : responses->as_array()) {
      Check(m.is_array() && m.as_array().size() == 3 && m.as_array()[0].is_string() &&
            m.as_array()[1].is_object() && m.as_array()[2].is_string());
    }
    Check(v->Find("sessionState") != nullptr);
  } else {
    const kw::mail::Value* type = v->Find("type");
    Check(type && type->is_string() && type->as_string().rfind("urn:ietf:params:jmap:error:", 0) == 0);
  }
  return 0;
}
