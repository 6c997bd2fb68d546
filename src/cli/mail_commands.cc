// keyward mail deliver: hands one RFC 5322 message (stdin) to a mailbox of the embedded store, as
// an MTA would over LMTP.
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "mail/store.h"

namespace kw::cli {
namespace {

struct DeliverFlags {
  std::string data_dir;
  std::string to;
  size_t max_bytes = 50u << 20;
};

int RunDeliver(const DeliverFlags& f) {
  std::string raw((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (raw.empty()) {
    std::cerr << "keyward: no message on stdin\n";
    return kExitUsage;
  }
  if (raw.size() > f.max_bytes) {
    std::cerr << fmt::format("keyward: the message is {} bytes, over the {} byte limit\n",
                             raw.size(), f.max_bytes);
    return kExitRejected;
  }
  mail::StoreOptions so;
  so.path = f.data_dir + "/mail.db";
  auto store = mail::Store::Open(so);
  if (!store.ok()) {
    std::cerr << "keyward: " << store.status().message() << "\n";
    return kExitUsage;
  }
  Result<mail::Account> account = NotFoundError("not looked up");
  Status read = (*store)->Read([&](mail::Txn& txn) {
    account = txn.FindAccountByEmail(f.to);
    return Status::Ok();
  });
  if (!read.ok()) {
    std::cerr << "keyward: " << read.message() << "\n";
    return kExitUsage;
  }
  if (!account.ok()) {
    std::cerr << fmt::format("keyward: no mailbox for '{}' ({})\n", f.to,
                             account.status().message());
    return kExitRejected;
  }
  auto delivered = (*store)->Deliver(account->id, raw);
  if (!delivered.ok()) {
    std::cerr << "keyward: " << delivered.status().message() << "\n";
    return delivered.status().code() == StatusCode::kInvalidArgument ? kExitRejected : kExitUsage;
  }
  std::cout << fmt::format("delivered {} to {} as email {} ({} bytes)\n",
                           delivered->message_id.empty() ? "(no Message-ID)" : delivered->message_id,
                           account->email, delivered->id, delivered->size);
  return kExitOk;
}

}  // namespace

void RegisterMailCommands(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<DeliverFlags>();
  const char* env = std::getenv("KEYWARD_DATA_DIR");
  f->data_dir = env && *env ? env : "keyward-data";
  auto* mail = app.add_subcommand("mail", "Mail store tools");
  mail->require_subcommand(1);
  auto* deliver = mail->add_subcommand(
      "deliver", "Deliver an RFC 5322 message from stdin to a mailbox's inbox. Exit 0 delivered, "
                 "1 refused (unknown recipient, unparseable or oversized message), 2 error");
  deliver->add_option("--data-dir", f->data_dir,
                      "Data directory (default $KEYWARD_DATA_DIR or ./keyward-data)");
  deliver->add_option("--to", f->to, "Recipient address (the mailbox's email)")->required();
  deliver->add_option("--max-bytes", f->max_bytes, "Largest message accepted (default 50 MB)");
  deliver->callback([f, exit_code] { *exit_code = RunDeliver(*f); });
}

}  // namespace kw::cli
