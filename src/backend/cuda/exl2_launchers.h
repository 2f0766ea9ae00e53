// Raw tier of the CUDA EXL2 matmul (see exl2_gemv.h): the device-side layer description and
// the launchers, taking device pointers and an explicit stream. Free of exq/fmt headers so
// the .cu files can include it (nvcc cannot compile fmt's consteval format strings).
//
// Device layout (made at upload, exl2_layout.h): the permuted input dimension is cut into
// units of 32 rows that never cross a group (a short group gives a short unit); 4 consecutive
// units of one segment (a run of groups of one bit width and one group size) form a step.
// q_weight is stored tile-major: for each 32-column tile, every unit's b words, and within a
// step the words interleaved as [word i][unit t][32 columns], so one warp's 16-byte loads of a
// step row are 512 contiguous bytes. Each unit-column's 32 values are re-arranged inside its b
// words so that a pair (row j, row j + 16) comes out with one or two integer ops.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exq::cuda {

inline constexpr int kExl2UnitRows = 32;
inline constexpr int kExl2UnitsPerStep = 4;
inline constexpr int kExl2TileColumns = 32;
inline constexpr int kExl2MaxBatch = 8;
inline constexpr int kExl2MaxSegments = 16;
// Launch shape limits: warps per block and blocks per cluster along K.
inline constexpr int kExl2MaxWarps = 16;
inline constexpr int kExl2MaxCluster = 8;

// A run of steps whose units share the bit width and the group size (the last group of the
// run may be shorter).
struct Exl2Segment {
  int32_t first_step = 0;
  int32_t steps = 0;
  int32_t units = 0;        // the last step holds units - 4 * (steps - 1)
  int32_t bits = 0;
  int32_t row = 0;          // first 128-byte row (32 columns x one word) of the run in a tile
  int32_t first_group = 0;  // q_scale row of the run's first unit
  int32_t groups = 0;
  int32_t units_per_group = 1;
  int32_t group_shift = 0;  // log2(units_per_group), or -1 when it is not a power of two
};

// One unit (upload, dequantize): where its words come from and go to.
struct Exl2Unit {
  int32_t src_word;  // first q_weight row in exllamav2's layout
  int32_t row;       // 128-byte row of word 0 within a tile; word i at row + i * stride
  int32_t group;     // q_scale row
  int32_t slot;      // step * 4 + t: x_map / x staging slot
  uint32_t info;     // bits | rows << 8 | stride << 16 (stride = units of its step)
};

// A layer resident on the device (all pointers into one allocation; see Exl2Layer).
struct Exl2Desc {
  const uint4* q_weight = nullptr;     // [tiles][tile_rows][32 columns] words, as uint4
  const uint32_t* q_scale = nullptr;   // [groups, out_pad/8], 4-bit codes qs-1
  const __half* group_m = nullptr;     // [groups]: fp16(q_scale_max / 256)
  const Exl2Unit* units = nullptr;     // [num_units]
  const int32_t* x_map = nullptr;      // [num_steps * 4 slots][16 pairs][2]: input channel, -1 none
  const __half* bias = nullptr;        // [out] or null
  int in = 0;
  int out = 0;
  int out_pad = 0;
  int num_units = 0;
  int num_steps = 0;
  int tile_rows = 0;     // 128-byte rows per tile: sum of bits over units
  int num_groups = 0;
  int uniform_bits = 0;  // the bit width of every group, 0 when widths differ
  int num_segments = 0;
  Exl2Segment segments[kExl2MaxSegments];
};

// Launch shape of one GEMV (chosen at upload, deterministic). Block (r, c) of the grid
// (ksplit, tile groups) runs tiles_per_block x ksub warps; warp (tile w, sub k) takes the
// 32-column tile c * tiles_per_block + w and steps [(r * ksub + k) * steps_per_warp, + spw).
// The ksplit blocks of a column form a thread-block cluster and add their partial sums
// through distributed shared memory in a fixed order (ksplit 1 without clusters).
struct Exl2Split {
  int ksplit = 1;
  int ksub = 1;
  int tiles_per_block = 8;
  int steps_per_warp = 1;
  bool cluster = true;     // ksplit > 1: clusters (else partials in the workspace + a reduce)
  int kernel = 2;          // 1: exl2_gemv.cu (session 2), 2: exl2_gemv_v2.cu
  // Kernel 2, mixed widths: the steps counted with each run padded to whole warp slices
  // (exl2_run_steps), so that every warp's steps lie in one run (one width's loop, inlined).
  bool runs = false;
};

// Steps of `d` with each run padded to a multiple of `spw` steps (an Exl2Split with runs).
inline int exl2_run_steps(const Exl2Desc& d, int spw) {
  int v = 0;
  for (int i = 0; i < d.num_segments; ++i) v += (d.segments[i].steps + spw - 1) / spw * spw;
  return v;
}

// Steps a split must cover in `d`: its own, or with runs padded to whole warp slices.
inline int exl2_split_steps(const Exl2Desc& d, const Exl2Split& s) {
  return s.runs ? exl2_run_steps(d, s.steps_per_warp) : d.num_steps;
}

// Layers multiplied by one launch (they share x: q, k, v, or gate, up), blocks one after the
// other along the grid's y: layer i's blocks are rows [block_start[i], block_start[i + 1]).
inline constexpr int kExl2MaxGroup = 3;
struct Exl2LayerIo {
  const uint32_t* xq = nullptr;  // its x staged: [slot][pair][bs]
  const float* xscale = nullptr;
  float* y = nullptr;
  float* partials = nullptr;  // [ksplit][batch][out_pad] when K is split without clusters
  // MoE: device bytes added to d's pointers at run time (the routed expert's copy of d's
  // layout, exl2_same_layout), or null. Kernel 2 only; d has no bias.
  const int64_t* shift = nullptr;
};
struct Exl2Group {
  int count = 0;
  int block_start[kExl2MaxGroup + 1] = {};
  Exl2Desc d[kExl2MaxGroup];
  Exl2LayerIo io[kExl2MaxGroup];
};

// MoE decode (batch 1): the k routed experts of one layer in one launch. The layers d[0, count)
// (gate and up, or down alone) are expert 0's; slot s of layer l reads io[l][s]: its shift onto
// the routed expert's copy, its own staged x and its own y. Blocks: layer 0's slots one after
// the other along the grid's y (rows[0] rows each), then layer 1's.
inline constexpr int kExl2MoeMaxLayers = 2;
inline constexpr int kExl2MoeMaxSlots = 8;
struct Exl2MoeGroup {
  int count = 0;
  int slots = 0;
  int rows[kExl2MoeMaxLayers] = {};  // block rows of one slot of layer l
  Exl2Desc d[kExl2MoeMaxLayers];
  Exl2LayerIo io[kExl2MoeMaxLayers][kExl2MoeMaxSlots];
};

// Whether kernel 2 runs this layer: every run's groups hold a power-of-two number of units
// (the group of a unit is a shift). Kernel 1 runs any layer.
inline bool exl2_gemv2_supports(const Exl2Desc& d) {
  for (int i = 0; i < d.num_segments; ++i)
    if (d.segments[i].group_shift < 0) return false;
  return d.num_segments > 0;
}

// Shared memory bytes of a GEMV block for `batch` rows.
size_t exl2_gemv_shared_bytes(const Exl2Split& split, int batch);
// Workspace of the x staging pass: permuted f16 x ([slots][16][bs] half2) and per-step scales.
size_t exl2_gemv_xq_words(const Exl2Desc& d);
size_t exl2_gemv_xscale_floats(const Exl2Desc& d);
// Partial sums of a K split without clusters.
size_t exl2_gemv_partial_floats(const Exl2Desc& d, const Exl2Split& split);
// Resident GEMV blocks per multiprocessor for a split (batch 8, the largest shared memory).
int exl2_gemv_blocks_per_sm(const Exl2Desc& d, const Exl2Split& split);
// Clusters of this split that can be resident at once (batch 8 shared memory).
int exl2_gemv_max_clusters(const Exl2Desc& d, const Exl2Split& split);
// Whether this device runs clusters and programmatic dependent launch (compute capability 9+).
bool exl2_gemv_hopper();

// Kernel 2 (exl2_gemv_v2.cu); the exl2_gemv_* functions above dispatch on split.kernel.
size_t exl2_gemv2_shared_bytes(const Exl2Split& split);
int exl2_gemv2_blocks_per_sm(const Exl2Desc& d, const Exl2Split& split);
int exl2_gemv2_max_clusters(const Exl2Desc& d, const Exl2Split& split);
// `width`: the group's common bit width (its kernel instance), 0 if widths differ.
void exl2_gemv2_launch(const Exl2Group& g, int width, int batch, int bs, bool add_bias,
                       const Exl2Split& split, cudaStream_t stream);

// Kernel 2 over an Exl2MoeGroup at batch 1; a K split without clusters writes every io's
// partials ([ksplit][out_pad]), summed by exl2_moe_reduce_cuda.
void exl2_gemv2_moe_launch(const Exl2MoeGroup& g, int width, const Exl2Split& split,
                           cudaStream_t stream);
// exl2_reduce_cuda (batch 1, no bias) for every io of g in one launch.
void exl2_moe_reduce_cuda(const Exl2MoeGroup& g, int ksplit, cudaStream_t stream);
// Its staging: entry e = l * slots + s stages x[e] (with up[e]: the SwiGLU of x[e] and up[e]),
// [1, in] f32, through layer l's map shifted by io[l][s].shift into io[l][s].xq / xscale.
void exl2_moe_prep_cuda(const Exl2MoeGroup& g, const float* const* x, const float* const* up,
                        cudaStream_t stream);

// Where a GEMV's x comes from: [batch, in] f32 or f16; with `up` (f32 only) the input is
// silu(x) * up, the MLP's SwiGLU (decode_swiglu_kernel's arithmetic), staged straight into
// the down projection.
struct Exl2Input {
  const void* x = nullptr;
  const float* up = nullptr;
  bool gelu = false;  // with up: gelu_tanh(x) * up (gemma's GeGLU)
  bool f32 = true;
  int batch = 1;
  bool staged = false;  // x is already in the scratch (batch 1, exl2_gemv_staged): no staging
};

// Scratch of one layer of a group launch: staged x, step scales, K-split partials.
struct Exl2Scratch {
  uint32_t* xq = nullptr;
  float* xscale = nullptr;
  float* partials = nullptr;
};

// y_i[b, out_i] = x[b, in] @ W_i^T (+ bias_i) for the layers d[0..n) (1 <= n <= kExl2MaxGroup,
// one `in`), 1 <= batch <= kExl2MaxBatch, y f32. Launches: one x staging pass for every layer
// (permute, scale, round to f16), one GEMV for every layer (programmatic dependent launch: it
// loads weights while the staging runs), and for a K split without clusters one reduce per
// layer. `width`: the layers' common bit width, 0 if they differ; `split` fits every layer.
// shifts (or null): per layer a device int64 of bytes added to its pointers (Exl2LayerIo::shift).
void exl2_gemv_cuda(const Exl2Desc* d, int n, int width, const Exl2Input& x, float* const* y,
                    bool add_bias, const Exl2Split& split, const Exl2Scratch* scratch,
                    cudaStream_t stream, const int64_t* const* shifts = nullptr);

// Re-lays q_weight rows [units[u0].src_word ...) of units [u0, u1) (exllamav2 layout, `src`
// holding rows from src_row0 on) into the device layout `dst`.
void exl2_repack_cuda(const Exl2Desc& d, const uint32_t* src, int src_row0, int u0, int u1,
                      uint4* dst, cudaStream_t stream);

// The GEMV's helper launches (exl2_stage.cu): x staging into xq [slot][pair][bs] and the
// per-step scales, and the in-order sum of K-split partials [ksplit][batch][out_pad] (+ bias).
void exl2_prep_cuda(const Exl2Desc* d, int n, const Exl2Input& x, int bs,
                    const Exl2Scratch* scratch, cudaStream_t stream,
                    const int64_t* const* shifts = nullptr);
void exl2_reduce_cuda(const float* partials, int ksplit, int batch, int out, int out_pad,
                      const __half* bias, float* y, cudaStream_t stream);

// W[out, in] f16 with its columns in q_perm order (column krow[u] + r holds row r of unit u:
// its first row in q_perm order), bit-exact with io::dequantize_exl2's values.
void exl2_dequantize_permuted_cuda(const Exl2Desc& d, const int32_t* krow, __half* w,
                                   cudaStream_t stream);

// y[rows, out] += bias (f16), for the dequantize + cuBLAS path.
void exl2_add_bias_cuda(float* y, const __half* bias, int rows, int out, cudaStream_t stream);

}  // namespace exq::cuda
