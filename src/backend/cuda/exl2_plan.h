// Host half of the EXL2 device layout (exl2_launchers.h): units, steps and segments of a
// validated layer, the x_map of the staging pass, and the GEMV launch shape. Pure functions of
// the group table and the device's shape, so they are tested without a GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/exl2_launchers.h"

namespace exq::cuda {

// Most steps one block stages in shared memory (batch 8: 2208 bytes a step).
inline constexpr int kExl2MaxBlockSteps = 80;

struct Exl2Plan {
  std::vector<Exl2Segment> segments;
  std::vector<Exl2Unit> units;
  std::vector<int32_t> unit_krow;  // [units]: the unit's first row in q_perm order
  std::vector<int32_t> x_map;     // [steps * 4][16][2]
  std::vector<uint16_t> group_m;  // [groups] fp16(q_scale_max / 256)
  int num_steps = 0;
  int tile_rows = 0;
  int uniform_bits = 0;
};

// `h` must have passed validation (group table contiguous, permutation valid). Throws
// exq::Error naming `name` when the layer has more than kExl2MaxSegments runs.
Exl2Plan exl2_plan(const Exl2HostLayer& h, const char* name);

// Launch shape for `tiles` 32-column tiles and `steps` steps on `sms` multiprocessors that
// each hold `warps_per_sm` GEMV warps; `hopper`: clusters are available.
Exl2Split exl2_choose_split(int tiles, int steps, int sms, int warps_per_sm, bool hopper);

// Why `split` cannot run this layer, or "" when it can.
const char* exl2_split_problem(const Exl2Split& split, int tiles, int steps, bool hopper);

}  // namespace exq::cuda
