// The Storm-0558 analytics as `keyward hunt`'s per-worker RecordProcessor (header only: users
// link kw_hunt and kw_detect_analytics).
//
// The analytics' Sigma rules do not run here: the hunt loads them into its own RuleSet
// (StormSigmaSources), so every record is parsed once and meets every Sigma rule in one pass;
// this processor runs the stateful detectors on the hunt Engine's parse of the record.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "detect/analytics/analytics.h"
#include "detect/hunt/hunt.h"

namespace kw::detect::analytics {

class HuntProcessor final : public RecordProcessor {
 public:
  // REQUIRES: `a` was opened with run_sigma = false.
  explicit HuntProcessor(std::unique_ptr<StormAnalytics> a, bool commit_on_flush)
      : a_(std::move(a)), commit_on_flush_(commit_on_flush) {}

  Status Process(std::string_view json, const simdjson::dom::element& parsed, const LogSource&,
                 AlertSink& sink) override {
    return a_->ProcessParsed(json, parsed, sink);
  }
  void Flush(AlertSink& sink) override {
    a_->Flush(sink);
    if (commit_on_flush_) commit_ = a_->Commit();
  }
  // Every baseline, window and session of the analytics belongs to one tenant.
  std::string_view PartitionField() const override { return "OrganizationId"; }

  // The result of saving the baselines at Flush (Ok when not asked to).
  const Status& commit_status() const { return commit_; }

 private:
  std::unique_ptr<StormAnalytics> a_;
  bool commit_on_flush_;
  Status commit_;
};

// Adds the analytics' Sigma rules and indicator placeholders to a hunt's rule texts and load
// options, and returns a HuntOptions::make_extra that opens one HuntProcessor per worker with
// `options` (run_sigma forced off). The first instance is opened here, so a bad option or
// database fails before the hunt starts.
inline Result<std::function<Result<std::unique_ptr<RecordProcessor>>()>> PrepareHuntAnalytics(
    AnalyticsOptions options, bool commit_on_flush,
    std::vector<std::pair<std::string, std::string>>* rule_texts, LoadOptions* load_options) {
  options.run_sigma = false;
  KW_RETURN_IF_ERROR(StormSigmaSources(options, rule_texts, &load_options->placeholders));
  KW_ASSIGN_OR_RETURN(auto first, StormAnalytics::Open(options));
  auto held = std::make_shared<std::unique_ptr<StormAnalytics>>(std::move(first));
  return std::function<Result<std::unique_ptr<RecordProcessor>>()>(
      [options, held, commit_on_flush]() -> Result<std::unique_ptr<RecordProcessor>> {
        std::unique_ptr<StormAnalytics> one = std::move(*held);
        if (!one) {
          KW_ASSIGN_OR_RETURN(one, StormAnalytics::Open(options));
        }
        return std::unique_ptr<RecordProcessor>(new HuntProcessor(std::move(one), commit_on_flush));
      });
}

}  // namespace kw::detect::analytics
