#include "http/stream.h"

#include <utility>

namespace kw::http {

std::vector<std::function<void()>> StreamBody::CloseLocked() {
  std::vector<std::function<void()>> run;
  if (closed_) return run;
  closed_ = true;
  run = std::move(on_close_);
  on_close_.clear();
  if (wake_) {
    run.push_back(std::move(wake_));
    wake_ = nullptr;
  }
  return run;
}

bool StreamBody::Write(std::string data) {
  std::vector<std::function<void()>> run;
  bool ok = true;
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    if (data.empty()) return true;
    if (queued_.size() + data.size() > max_buffered_bytes_) {
      queued_.clear();  // the client is not reading: cut it off
      run = CloseLocked();
      ok = false;
    } else {
      queued_ += data;
      if (wake_) {
        run.push_back(std::move(wake_));
        wake_ = nullptr;
      }
    }
  }
  for (auto& f : run) f();
  return ok;
}

void StreamBody::Finish() {
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(mu_);
    run = CloseLocked();
  }
  for (auto& f : run) f();
}

bool StreamBody::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

void StreamBody::OnClose(std::function<void()> f) {
  {
    std::lock_guard lock(mu_);
    if (!closed_) {
      on_close_.push_back(std::move(f));
      return;
    }
  }
  f();
}

StreamBody::Take StreamBody::TakeOrWait(std::string* out, std::function<void()> wake) {
  std::lock_guard lock(mu_);
  if (!queued_.empty()) {
    out->swap(queued_);
    queued_.clear();
    return Take::kData;
  }
  if (closed_) return Take::kEnd;
  wake_ = std::move(wake);
  return Take::kWait;
}

void StreamBody::Close() {
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(mu_);
    queued_.clear();
    run = CloseLocked();
  }
  for (auto& f : run) f();
}

}  // namespace kw::http
