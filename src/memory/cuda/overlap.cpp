#include "memory/cuda/overlap.h"

#include <algorithm>

namespace exq::memory::cuda {
namespace {

// Sorted, disjoint, non-empty intervals covering the same set.
std::vector<Interval> normalize(std::vector<Interval> v) {
  std::erase_if(v, [](const Interval& i) { return !(i.end > i.begin); });
  std::sort(v.begin(), v.end(), [](const Interval& a, const Interval& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  std::vector<Interval> out;
  for (const Interval& i : v) {
    if (!out.empty() && i.begin <= out.back().end)
      out.back().end = std::max(out.back().end, i.end);
    else
      out.push_back(i);
  }
  return out;
}

}  // namespace

double union_length(std::vector<Interval> intervals) {
  double total = 0;
  for (const Interval& i : normalize(std::move(intervals))) total += i.end - i.begin;
  return total;
}

double overlap_length(std::vector<Interval> a, std::vector<Interval> b) {
  const std::vector<Interval> x = normalize(std::move(a)), y = normalize(std::move(b));
  double total = 0;
  size_t i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    const double lo = std::max(x[i].begin, y[j].begin), hi = std::min(x[i].end, y[j].end);
    if (hi > lo) total += hi - lo;
    if (x[i].end < y[j].end)
      ++i;
    else
      ++j;
  }
  return total;
}

double hidden_fraction(const std::vector<Interval>& copies, const std::vector<Interval>& compute) {
  const double copy = union_length(copies);
  if (copy <= 0) return 1.0;
  return std::clamp(overlap_length(copies, compute) / copy, 0.0, 1.0);
}

}  // namespace exq::memory::cuda
