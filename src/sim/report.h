// The simulator's report: a terminal summary and one self-contained HTML file (inline CSS and
// SVG, no script, no network) with the timeline of actor activity against alerts, time to detect
// per target tenant, precision and recall per rule, and the false-alarm table.
#pragma once

#include <string>
#include <vector>

#include "sim/campaign.h"
#include "sim/simulation.h"

namespace kw::sim {

struct SimReport {
  SimOptions options;
  std::string fingerprint;  // of the population and schedule (campaign.h)
  std::vector<ModeResult> modes;
};

// The targets for one mode, each met or not, with the measured value.
struct TargetCheck {
  std::string name;
  bool met = false;
  std::string value;
};
std::vector<TargetCheck> CheckTargets(const ModeResult& r);

std::string FormatSummary(const SimReport& report);
std::string RenderHtml(const SimReport& report);

// "2d 03:15" for a duration in milliseconds of simulated time; "-" when negative.
std::string FormatSimDuration(int64_t ms);

}  // namespace kw::sim
