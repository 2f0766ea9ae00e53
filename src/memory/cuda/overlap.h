// Interval arithmetic for transfer statistics: how much of the time spent copying between host
// and device ran while the compute stream was busy (copy_hidden in the converter's status).
// Intervals come from CUDA timing events (span_recorder.h) but the math is plain host code.
#pragma once

#include <vector>

namespace exq::memory::cuda {

struct Interval {
  double begin = 0;  // seconds, any common origin
  double end = 0;
};

// Length of the union of the intervals (overlapping ones counted once; empty ones ignored).
double union_length(std::vector<Interval> intervals);

// Length of (union of a) intersected with (union of b).
double overlap_length(std::vector<Interval> a, std::vector<Interval> b);

// Share of union(copies) that lies inside union(compute): 1 when there were no copies.
double hidden_fraction(const std::vector<Interval>& copies, const std::vector<Interval>& compute);

}  // namespace exq::memory::cuda
