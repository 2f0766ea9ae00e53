#include "backend/cuda/exl2_plan.h"

#include <algorithm>
#include <bit>

#include "core/error.h"
#include "core/half.h"

namespace exq::cuda {
namespace {

int units_of(int64_t rows) { return static_cast<int>((rows + kExl2UnitRows - 1) / kExl2UnitRows); }

}  // namespace

Exl2Plan exl2_plan(const Exl2HostLayer& h, const char* name) {
  Exl2Plan p;
  // Runs of groups with one bit width and one unit count (a shorter group ends its run).
  bool closed = true;
  for (int64_t g = 0; g < h.num_groups; ++g) {
    const Exl2HostGroup& gr = h.groups[g];
    const int u = units_of(gr.rows);
    if (!closed && p.segments.back().bits == gr.bits && u <= p.segments.back().units_per_group) {
      Exl2Segment& s = p.segments.back();
      s.units += u;
      ++s.groups;
      closed = u < s.units_per_group;
      continue;
    }
    EXQ_CHECK(p.segments.size() < static_cast<size_t>(kExl2MaxSegments),
              "{}: more than {} runs of groups of one bit width and size; the CUDA layout "
              "supports at most that many",
              name, kExl2MaxSegments);
    Exl2Segment s;
    s.bits = gr.bits;
    s.units = u;
    s.first_group = static_cast<int32_t>(g);
    s.groups = 1;
    s.units_per_group = u;
    s.group_shift = (u & (u - 1)) == 0 ? __builtin_ctz(static_cast<unsigned>(u)) : -1;
    p.segments.push_back(s);
    closed = false;
  }
  int step = 0, row = 0;
  for (Exl2Segment& s : p.segments) {
    s.first_step = step;
    s.steps = (s.units + kExl2UnitsPerStep - 1) / kExl2UnitsPerStep;
    s.row = row;
    step += s.steps;
    row += s.units * s.bits;
  }
  p.num_steps = step;
  p.tile_rows = row;
  p.uniform_bits = p.segments[0].bits;
  for (const Exl2Segment& s : p.segments)
    if (s.bits != p.uniform_bits) p.uniform_bits = 0;

  p.x_map.assign(static_cast<size_t>(p.num_steps) * kExl2UnitsPerStep * 32, -1);
  for (const Exl2Segment& s : p.segments) {
    for (int k = 0; k < s.units; ++k) {
      const int gi = k / s.units_per_group, kg = k % s.units_per_group;
      const Exl2HostGroup& gr = h.groups[s.first_group + gi];
      const int ls = k / kExl2UnitsPerStep, t = k % kExl2UnitsPerStep;
      const int n = std::min(kExl2UnitsPerStep, s.units - kExl2UnitsPerStep * ls);
      const int rows = static_cast<int>(
          std::min<int64_t>(kExl2UnitRows, gr.rows - int64_t{kExl2UnitRows} * kg));
      Exl2Unit un;
      un.src_word = static_cast<int32_t>(gr.word_begin + static_cast<int64_t>(kg) * s.bits);
      un.row = s.row + kExl2UnitsPerStep * ls * s.bits + t;
      un.group = s.first_group + gi;
      un.slot = (s.first_step + ls) * kExl2UnitsPerStep + t;
      un.info = static_cast<uint32_t>(s.bits) | static_cast<uint32_t>(rows) << 8 |
                static_cast<uint32_t>(n) << 16;
      const int64_t r0 = gr.row_begin + int64_t{kExl2UnitRows} * kg;
      p.units.push_back(un);
      p.unit_krow.push_back(static_cast<int32_t>(r0));
      for (int r = 0; r < rows; ++r)
        p.x_map[static_cast<size_t>(un.slot) * 32 + (r % 16) * 2 + r / 16] = h.q_perm[r0 + r];
    }
  }
  for (int64_t g = 0; g < h.num_groups; ++g)
    p.group_m.push_back(float_to_half(half_to_float(h.q_scale_max[g]) / 256.0f));
  return p;
}

const char* exl2_split_problem(const Exl2Split& s, int tiles, int steps, bool hopper) {
  if (s.tiles_per_block < 1 || s.ksub < 1 || s.ksplit < 1 || s.steps_per_warp < 1)
    return "every count must be at least 1";
  if (s.kernel != 1 && s.kernel != 2) return "kernel must be 1 or 2";
  if (s.tiles_per_block * s.ksub > kExl2MaxWarps) return "more than 16 warps per block";
  if (s.ksplit > kExl2MaxCluster) return "ksplit above 8";
  if (s.ksplit > 1 && s.cluster && !hopper) return "clusters need compute capability 9.0";
  if (static_cast<int64_t>(s.ksplit) * s.ksub * s.steps_per_warp < steps)
    return "ksplit * ksub * steps_per_warp does not cover the steps";
  if (s.ksub * s.steps_per_warp > kExl2MaxBlockSteps) return "more than 80 steps per block";
  (void)tiles;
  return "";
}

// K is cut into balanced slices (1 step and up) until tiles x slices fill the machine with
// about `warps_per_sm` warps per multiprocessor. Slices go to warps of one block first (no
// cross-block reduction), up to 16, but only while that leaves ~a block per multiprocessor
// and a block stages at most 48 steps of x; the rest go to blocks along K (ksplit), added
// through a cluster when there are two (distributed shared memory), else through partial sums
// (measured faster than larger clusters on an H100: exl2_gemv_bench --only sweep). Tiles per
// block are set by the caller from the occupancy (exl2_gemv.cpp).
Exl2Split exl2_choose_split(int tiles, int steps, int sms, int warps_per_sm, bool hopper) {
  constexpr int kSoftBlockSteps = 48;
  const int want = std::max(1, sms * warps_per_sm / tiles);
  int kpar = std::min({want, steps, kExl2MaxWarps * kExl2MaxCluster});
  const int spw0 = (steps + kpar - 1) / kpar;
  kpar = (steps + spw0 - 1) / spw0;
  Exl2Split s;
  s.steps_per_warp = spw0;
  s.ksub = std::min(kpar, kExl2MaxWarps);
  auto blocks = [&](int ksub) { return int64_t{tiles} * ((kpar + ksub - 1) / ksub); };
  while (s.ksub > 1 && (blocks(s.ksub) * 10 < int64_t{sms} * 9 || s.ksub * spw0 > kSoftBlockSteps)) {
    const int next = (s.ksub + 1) / 2;
    if ((kpar + next - 1) / next > kExl2MaxCluster) break;
    s.ksub = next;
  }
  s.ksplit = std::min(kExl2MaxCluster, (kpar + s.ksub - 1) / s.ksub);
  // When blocks of ksub warps would not all be resident at once, warps along K in a power of
  // two so that blocks pack the multiprocessor: 11 warps (q/k/v of Llama-3-8B, 192 tiles) left
  // 5 warp slots empty and the grid took two waves. Small grids keep their ksub.
  if (int64_t{tiles} * s.ksplit > int64_t{sms} * std::max(1, warps_per_sm / s.ksub))
    s.ksub = static_cast<int>(std::bit_floor(static_cast<unsigned>(s.ksub)));
  s.steps_per_warp = (steps + s.ksplit * s.ksub - 1) / (s.ksplit * s.ksub);
  while (s.ksub * s.steps_per_warp > kExl2MaxBlockSteps && s.ksub < kExl2MaxWarps) {
    ++s.ksub;  // very long K: more warps along K
    s.steps_per_warp = (steps + s.ksplit * s.ksub - 1) / (s.ksplit * s.ksub);
  }
  s.cluster = hopper && s.ksplit <= 2;
  s.tiles_per_block = 1;
  return s;
}

}  // namespace exq::cuda
