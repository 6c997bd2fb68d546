// Helpers shared by the mail tests: a scratch directory and sample RFC 5322 messages.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <mutex>
#include <vector>

#include "core/test_util.h"
#include "audit/audit_log.h"
#include <stdexcept>
#include <string>
#include <string_view>

namespace kw::mail::testing {

// An AuditWriter that keeps records in memory and can be told to fail (audit::MemoryAuditWriter
// has the same shape; this one adds the failure switch the 503 tests need). Thread-safe.
class RecordingAuditWriter final : public audit::AuditWriter {
 public:
  Result<uint64_t> Append(audit::AuditRecord record) override {
    std::lock_guard lock(mu_);
    if (fail_) return UnavailableError("audit disk full");
    record.seq = records_.size() + 1;
    records_.push_back(std::move(record));
    return records_.back().seq;
  }
  std::vector<audit::AuditRecord> records() const {
    std::lock_guard lock(mu_);
    return records_;
  }
  void Clear() {
    std::lock_guard lock(mu_);
    records_.clear();
  }
  void set_fail(bool fail) {
    std::lock_guard lock(mu_);
    fail_ = fail;
  }

 private:
  mutable std::mutex mu_;
  std::vector<audit::AuditRecord> records_;
  bool fail_ = false;
};

using kw::test::TempDir;

// CRLF line endings, as on the wire.
inline std::string Crlf(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\r\n";
    else out.push_back(c);
  }
  return out;
}

inline constexpr std::string_view kPlain = R"(From: Bob Example <bob@fabrikam.test>
To: Alice <alice@contoso.test>
Subject: Quarterly numbers
Date: Fri, 16 Jun 2023 09:00:00 +0000
Message-ID: <q1@fabrikam.test>
Content-Type: text/plain; charset=utf-8

The quarterly numbers are attached below.
Regards, Bob
)";

inline constexpr std::string_view kReply = R"(From: Alice <alice@contoso.test>
To: Bob Example <bob@fabrikam.test>
Subject: Re: Quarterly numbers
Date: Fri, 16 Jun 2023 10:00:00 +0000
Message-ID: <r1@contoso.test>
In-Reply-To: <q1@fabrikam.test>
References: <q1@fabrikam.test>
Content-Type: text/plain; charset=utf-8

Thanks Bob.
)";

inline constexpr std::string_view kAlternativeWithAttachment = R"(From: Carol <carol@contoso.test>
To: Alice <alice@contoso.test>, Dave <dave@contoso.test>
Cc: Eve <eve@contoso.test>
Subject: Plans for the offsite
Date: Mon, 19 Jun 2023 08:30:00 +0200
Message-ID: <offsite@contoso.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=us-ascii

Agenda: hiking, then dinner.
--inner
Content-Type: text/html; charset=us-ascii

<html><body><p>Agenda: <b>hiking</b>, then dinner.</p></body></html>
--inner--
--outer
Content-Type: application/pdf; name="agenda.pdf"
Content-Disposition: attachment; filename="agenda.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK
--outer--
)";

// Subject in ISO-8859-1 (RFC 2047 Q), sender name in Shift_JIS (RFC 2047 B), body in ISO-8859-1.
inline constexpr std::string_view kCharsets =
    "From: =?Shift_JIS?B?k2OShpG+mFk=?= <tanaka@fabrikam.test>\n"
    "To: alice@contoso.test\n"
    "Subject: =?ISO-8859-1?Q?R=E9sum=E9_for_Fran=E7ois?=\n"
    "Date: Tue, 20 Jun 2023 01:00:00 +0900\n"
    "Message-ID: <cs@fabrikam.test>\n"
    "Content-Type: text/plain; charset=ISO-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Caf=E9 cr=E8me br=FBl=E9e.\n";

inline constexpr std::string_view kMalformed =
    "From: <<<broken@@address\n"
    "To: ,,,\n"
    "Subject: broken \xff\xfe bytes\n"
    "Date: not a date\n"
    "Content-Type: multipart/mixed; boundary=\"never\"\n"
    "\n"
    "--wrong\n"
    "Content-Type: text/plain; charset=x-unknown-charset\n"
    "\n"
    "body \xc3\x28 text\n";

}  // namespace kw::mail::testing
