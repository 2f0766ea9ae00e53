// Raw tier of the CUDA EXL2 matmul (see exl2_gemv.h): the device-side layer description and
// the launchers, taking device pointers and an explicit stream. Free of exq/fmt headers so
// exl2_gemv.cu can include it (nvcc cannot compile fmt's consteval format strings).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace exq::cuda {

// The permuted input dimension is cut into units of at most 32 rows that never cross a group
// boundary: a full unit of a b-bit group is exactly b q_weight rows (32 values per column).
inline constexpr int kExl2UnitRows = 32;
// The GEMV kernel handles 4 consecutive units per warp step and 32 output columns per tile.
inline constexpr int kExl2UnitsPerStep = 4;
inline constexpr int kExl2TileColumns = 32;
inline constexpr int kExl2MaxBatch = 8;
// x of a block's rows is staged in shared memory: at most 32 steps (69.6 KB, two blocks per SM).
inline constexpr int kExl2MaxStepsPerBlock = 32;

struct Exl2Unit {
  int32_t word_row;  // first q_weight row of the unit
  int32_t row_base;  // first permuted input row of the unit
  int32_t group;     // q_scale row
  uint32_t info;     // bits (8) | rows (8) << 8 | fp16 bits of m = q_scale_max/256 << 16
};

// A layer resident on the device (all pointers into one allocation; see Exl2Layer).
struct Exl2Desc {
  const uint32_t* q_weight = nullptr;  // [words, out_pad]
  const uint32_t* q_scale = nullptr;   // [groups, out_pad/8], 4-bit codes qs-1
  const Exl2Unit* units = nullptr;     // [num_units]
  const uint8_t* step_bits = nullptr;  // [num_steps]: common bit width of a step's units, 0 if mixed
  const int32_t* q_perm = nullptr;     // [in]: permuted row i is input channel q_perm[i]
  const int32_t* x_slot = nullptr;     // [in]: input channel i sits in unit s/32, row s%32
  const __half* bias = nullptr;        // [out] or null
  int in = 0;
  int out = 0;
  int out_pad = 0;
  int num_units = 0;
  int num_steps = 0;  // ceil(num_units / kExl2UnitsPerStep)
  int uniform_bits = 0;  // the bit width of every group, 0 when widths differ
};

// Split of the K dimension over blocks for one GEMV launch (chosen by the wrapper).
struct Exl2Split {
  int blocks_k = 1;         // blocks along K (gridDim.y); partial sums are reduced across them
  int steps_per_block = 1;  // warp steps of K per block (<= kExl2MaxStepsPerBlock)
  int tile_blocks = 1;      // gridDim.x (<= ceil(tiles / 8)); warp w of block x takes the
                            // 32-column tiles (x + i * gridDim.x) * 8 + w
};

// Resident GEMV blocks per multiprocessor for this layer and steps per block (occupancy).
int exl2_gemv_blocks_per_sm(const Exl2Desc& d, int steps_per_block);
// Bytes of dynamic shared memory a GEMV block needs, and the scratch the cross-block reduction
// needs: floats for partial sums plus int counters that must be zero before the first launch
// (the kernel leaves them zero again).
size_t exl2_gemv_shared_bytes(const Exl2Split& split);
size_t exl2_gemv_partial_floats(const Exl2Desc& d, const Exl2Split& split);
size_t exl2_gemv_counter_ints(const Exl2Desc& d);

// y[b, out] = x[b, in] @ W^T (+ bias) for 1 <= batch <= kExl2MaxBatch; X in {float, __half};
// y f32. `partials` / `counters` as sized above (unused when split.blocks_k == 1).
template <typename X>
void exl2_gemv_cuda(const Exl2Desc& d, const X* x, float* y, int batch, bool add_bias,
                    const Exl2Split& split, float* partials, int* counters, cudaStream_t stream);

// W[out, in] f16, original channel order, bit-exact with io::dequantize_exl2. A block keeps
// whole rows of W in shared memory: in <= exl2_dequantize_max_in().
size_t exl2_dequantize_max_in();
void exl2_dequantize_cuda(const Exl2Desc& d, __half* w, cudaStream_t stream);

// y[rows, out] += bias (f16), for the dequantize + cuBLAS path.
void exl2_add_bias_cuda(float* y, const __half* bias, int rows, int out, cudaStream_t stream);

}  // namespace exq::cuda
