// Field access into one parsed event and evaluation of compiled detections. Internal to
// kw_detect; one EventView per Engine (not thread-safe), reused for every event so that matching
// allocates nothing once its buffers have grown.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "detect/rule.h"

namespace kw::detect::internal {

class EventView {
 public:
  // One scalar (or object) reached by a field path. Arrays are flattened into several values.
  struct Value {
    simdjson::dom::element el;
    simdjson::dom::element_type type;
    uint32_t raw_off = 0, raw_len = 0;  // text form in arena_ (numbers, bools) if raw_in_arena
    uint32_t low_off = 0, low_len = 0;
    bool raw_in_arena = false;
    bool low_done = false;
  };

  // `d` supplies the field table and the Hyperscan databases; `scratch` must fit them all.
  EventView(const RuleSetData* d, HsScratch* scratch);

  // Starts a new event. `root` must stay valid until the next Reset.
  void Reset(simdjson::dom::element root);

  // The values of field `id` (resolved once per event).
  struct Span {
    uint32_t begin = 0, count = 0;
  };
  Span Resolve(int id);
  const Value& value(uint32_t i) const { return values_[i]; }
  // Text of a scalar value (strings as-is, numbers/bools as JSON text); false for null, objects.
  bool Raw(uint32_t i, std::string_view* out);
  // ASCII-lower-cased text.
  bool Lower(uint32_t i, std::string_view* out);

  // Resolves an arbitrary dotted path (not interned); used for timestamps and group-by values.
  bool FirstText(int field_id, std::string* out);

  simdjson::dom::element root() const { return root_; }

  // Scans field `id` with its Hyperscan database (once per event) and returns the range of
  // matched ids in matched_ids(). REQUIRES a database for the field.
  Span ScanField(int id);
  uint32_t matched_id(uint32_t i) const { return matched_[i]; }

  // Matching.
  bool MatchDetection(const Detection& d);
  bool MatchSelection(const Selection& s);
  bool MatchFieldTest(const FieldTest& t);

 private:
  void Collect(simdjson::dom::element e, std::string_view path, int depth);
  void AddValue(simdjson::dom::element e, int depth);
  bool MatchValueOn(const ValueTest& v, uint32_t slot);
  bool MatchValue(const ValueTest& v, Span span, int field);
  static int OnHsMatch(unsigned id, unsigned long long, unsigned long long, unsigned, void* ctx);
  bool MatchKeyword(const FieldTest& t);
  // Every string, number and boolean of the event, collected once per event for keyword
  // searches (their lower-cased forms are then computed at most once each).
  Span AllScalars();
  void CollectScalars(simdjson::dom::element e, int depth);
  bool EvalNode(const Detection& d, int node);

  const FieldTable* fields_;
  const RuleSetData* data_;
  HsScratch* scratch_hs_;
  std::vector<uint64_t> id_gen_;    // per Hyperscan id: generation it last matched in
  std::vector<uint64_t> scan_gen_;  // per field: generation it was last scanned in
  std::vector<Span> scan_span_;     // per field: its matched ids in matched_
  std::vector<uint32_t> matched_;
  size_t scan_len_ = 0;             // length of the text being scanned
  uint64_t scalars_gen_ = 0;
  Span scalars_;
  simdjson::dom::element root_;
  uint64_t generation_ = 0;
  std::vector<uint64_t> field_gen_;
  std::vector<Span> field_span_;
  std::vector<Value> values_;
  std::string arena_;
  std::vector<int8_t> memo_;  // per selection: -1 unknown, 0, 1
};

// Extracts minute/hour/day/week/month/year from an ISO 8601 text; false if it is not one.
bool ExtractTimePart(std::string_view text, TimePart part, double* out);

}  // namespace kw::detect::internal
