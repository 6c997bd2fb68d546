// A thin RAII layer over SQLite, Keyward's embedded default store. Errors come back as Status
// with SQLite's message and the statement's purpose; nothing throws.
//
// Thread safety: a Db is one SQLite connection (opened in serialized mode) and may be shared, but
// a Statement belongs to one thread at a time. Databases are opened in WAL mode with foreign keys
// on and a busy timeout, so readers never block the writer.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kw::sqlite {

class Statement;

class Db {
 public:
  // Opens (creating if needed, with mode 0600) the database file; ":memory:" gives a private
  // in-memory database.
  static Result<std::unique_ptr<Db>> Open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more statements with no parameters and no results (schema, pragmas).
  Status Exec(std::string_view sql);
  Result<Statement> Prepare(std::string_view sql);
  // Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  int64_t Changes() const;
  const std::string& path() const { return path_; }

  // BEGIN IMMEDIATE ... COMMIT around `fn`; rolls back if fn returns an error.
  template <typename Fn>
  Status Transaction(Fn&& fn) {
    KW_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = fn();
    if (!s.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return s;
    }
    return Exec("COMMIT");
  }

 private:
  Db(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  friend class Statement;
  sqlite3* db_;
  std::string path_;
};

// A prepared statement. Bind indexes start at 1, column indexes at 0.
class Statement {
 public:
  Statement(Statement&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }
  Statement& operator=(Statement&&) = delete;
  ~Statement();

  Statement& Bind(int i, std::string_view text);
  Statement& BindBlob(int i, std::string_view bytes);
  Statement& Bind(int i, int64_t v);
  Statement& BindNull(int i);

  // Advances: true with a row, false when done; an error Status on failure.
  Result<bool> Step();
  // Runs to completion (for statements without results).
  Status Run();
  Status Reset();

  std::string Text(int col) const;
  std::string Blob(int col) const;
  int64_t Int(int col) const;
  bool IsNull(int col) const;

 private:
  friend class Db;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  Status bind_error_;
};

}  // namespace kw::sqlite
