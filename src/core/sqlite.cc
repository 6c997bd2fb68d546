#include "core/sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace kw::sqlite {

Result<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  if (path != ":memory:") {
    // Keyward's databases hold identities and audit records: create them private (SQLite gives
    // the -wal and -shm files the same mode as the database file).
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return UnavailableError(fmt::format("cannot open database {}: {}", path, std::strerror(errno)));
    }
    ::close(fd);
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return UnavailableError(fmt::format("cannot open database {}: {}", path, msg));
  }
  std::unique_ptr<Db> out(new Db(db, path));
  sqlite3_busy_timeout(db, 5000);
  KW_RETURN_IF_ERROR(out->Exec("PRAGMA foreign_keys = ON"));
  if (path != ":memory:") {
    // WAL: readers never block the writer; synchronous=FULL so a committed row survives a crash.
    KW_RETURN_IF_ERROR(out->Exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL"));
  }
  return out;
}

Db::~Db() { sqlite3_close_v2(db_); }

Status Db::Exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  if (sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return InternalError(fmt::format("database {}: {}", path_, msg));
  }
  return Status::Ok();
}

Result<Statement> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) != SQLITE_OK) {
    return InternalError(fmt::format("database {}: cannot prepare statement: {}", path_, sqlite3_errmsg(db_)));
  }
  return Statement(db_, stmt);
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement& Statement::Bind(int i, std::string_view text) {
  if (sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK) {
    bind_error_ = InternalError(fmt::format("bind {}: {}", i, sqlite3_errmsg(db_)));
  }
  return *this;
}

Statement& Statement::BindBlob(int i, std::string_view bytes) {
  if (sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT) != SQLITE_OK) {
    bind_error_ = InternalError(fmt::format("bind {}: {}", i, sqlite3_errmsg(db_)));
  }
  return *this;
}

Statement& Statement::Bind(int i, int64_t v) {
  if (sqlite3_bind_int64(stmt_, i, v) != SQLITE_OK) {
    bind_error_ = InternalError(fmt::format("bind {}: {}", i, sqlite3_errmsg(db_)));
  }
  return *this;
}

Statement& Statement::BindNull(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

Result<bool> Statement::Step() {
  if (!bind_error_.ok()) return bind_error_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  if (rc == SQLITE_CONSTRAINT) {
    return AlreadyExistsError(fmt::format("constraint violated: {}", sqlite3_errmsg(db_)));
  }
  return InternalError(fmt::format("database step failed: {}", sqlite3_errmsg(db_)));
}

Status Statement::Run() {
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Status::Ok();
  }
}

Status Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_error_ = Status::Ok();
  return Status::Ok();
}

std::string Statement::Text(int col) const {
  const auto* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

std::string Statement::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

}  // namespace kw::sqlite
