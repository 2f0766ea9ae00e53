// EXL2 linear layers on the GPU: upload (one contiguous device allocation per layer, q_weight
// re-laid out for the kernels, exl2_launchers.h), a tensor-core GEMV on the packed weights for
// decode (1..8 rows), and a prefill path that dequantizes to an fp16 scratch W[out, in] and
// multiplies with cuBLAS (matmul.h).
// Weights are exactly exllamav2's fp16 reconstruction (io/exl2.h); accumulation is f32.
// Host input is raw pointers, so the backend stays independent of io/ (build an
// Exl2HostLayer from io::validate_exl2's group table, as the tests do).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/exl2_launchers.h"
#include "backend/cuda/memory.h"

namespace exq::cuda {

struct Exl2HostGroup {
  int bits = 0;
  int64_t row_begin = 0;   // first permuted input row
  int64_t rows = 0;
  int64_t word_begin = 0;  // first q_weight row
};

// One layer as stored (nothing owned; the pointers must stay valid during the upload).
struct Exl2HostLayer {
  int64_t in = 0;
  int64_t out = 0;
  const uint32_t* q_weight = nullptr;     // [q_weight_rows, out_pad], out_pad = out rounded to 32
  int64_t q_weight_rows = 0;
  const uint32_t* q_scale = nullptr;      // [num_groups, out_pad/8]
  const uint16_t* q_scale_max = nullptr;  // [num_groups] fp16
  const int32_t* q_perm = nullptr;        // [in]: permuted row i is input channel q_perm[i]
  const Exl2HostGroup* groups = nullptr;  // [num_groups], contiguous from row 0
  int64_t num_groups = 0;
  const uint16_t* bias = nullptr;         // [out] fp16, or null
};

// A layer resident on the device. Move-only; owns one allocation.
class Exl2Layer {
 public:
  Exl2Layer() = default;
  // Validates `host` (throws exq::Error naming `name`, expected vs actual), copies it and
  // converts q_weight on the device (through a scratch of at most 32 MB); returns once done.
  Exl2Layer(const Exl2HostLayer& host, cudaStream_t stream, const char* name = "exl2 layer");

  const Exl2Desc& desc() const { return desc_; }
  const Exl2Split& split() const { return split_; }
  // Overrides the launch split chosen at upload (for tuning; reserve workspaces again).
  void set_split(const Exl2Split& split);
  // GEMV kernel: 2 (exl2_gemv_v2.cu, the default where exl2_gemv2_supports) or 1 (the
  // session-2 kernel, also chosen at upload by EXQ_EXL2_GEMV=v1); picks the split for it
  // (reserve workspaces again). Throws if the layer cannot run kernel 2.
  void set_kernel(int kernel);
  int kernel() const { return split_.kernel; }
  bool kernel2_ok() const { return kernel2_ok_; }
  // Mixed widths on kernel 2 with a launch split that puts every warp's steps in one run
  // (Exl2Split::runs): the default at upload for layers of >= 4 MB (EXQ_EXL2_MIXED=runs|k1
  // forces it on or off; EXQ_EXL2_GEMV off). False (split unchanged) when no such split fits;
  // throws if the layer does not mix widths or kernel 2 cannot run it.
  bool set_runs();
  int64_t in() const { return desc_.in; }
  int64_t out() const { return desc_.out; }
  bool has_bias() const { return desc_.bias != nullptr; }
  bool empty() const { return buffer_.empty(); }
  size_t device_bytes() const { return buffer_.size(); }
  // Bytes of the stored format one GEMV must read: q_weight + q_scale + q_scale_max + q_groups.
  size_t weight_bytes() const { return weight_bytes_; }
  // Where input channel c goes in the batch-1 staged x (f16 element x_pos()[c] of the region's
  // xq, exl2_gemv_staged), for a producer that writes it directly; that producer also writes 0
  // to the elements x_pad()[0, x_pad_count()), the layout's padding rows.
  const int32_t* x_pos() const { return x_pos_; }
  const int32_t* x_pad() const { return x_pad_; }
  int x_pad_count() const { return x_pad_count_; }
  // q_perm on the device ([in]): column k of exl2_dequantize_permuted's W is channel q_perm[k].
  const int32_t* q_perm() const { return q_perm_; }
  // Each unit's first row in q_perm order ([num_units], device).
  const int32_t* unit_krow() const { return unit_krow_; }
  // Whether the grouped expert GEMM (expert_gemm.h) reads this layout (decided at upload).
  bool expert_gemm_ok() const { return expert_gemm_ok_; }

 private:
  DeviceBuffer buffer_;
  Exl2Desc desc_;
  Exl2Split split_;
  size_t weight_bytes_ = 0;
  bool kernel2_ok_ = false;
  bool expert_gemm_ok_ = false;
  const int32_t* x_pos_ = nullptr;
  const int32_t* x_pad_ = nullptr;
  int x_pad_count_ = 0;
  DeviceBuffer prefill_buffer_;  // q_perm, unit_krow
  const int32_t* q_perm_ = nullptr;
  const int32_t* unit_krow_ = nullptr;
};

// Layers that share their input (q, k, v; gate, up), multiplied by one staging launch and one
// GEMV launch: the fixed cost of a launch (ramp-up, tail) is paid once for all of them. The
// kernel and launch split are chosen for the group; nothing is owned (the layers must outlive
// it).
class Exl2LayerGroup {
 public:
  Exl2LayerGroup() = default;
  // 1 .. kExl2MaxGroup uploaded layers with the same `in` (throws exq::Error naming `name`).
  Exl2LayerGroup(std::vector<const Exl2Layer*> layers, const char* name = "exl2 group");
  const std::vector<const Exl2Layer*>& layers() const { return layers_; }
  const Exl2Split& split() const { return split_; }
  int width() const { return width_; }  // the common bit width, 0 if the layers' differ
  int64_t in() const { return layers_.empty() ? 0 : layers_[0]->in(); }
  bool empty() const { return layers_.empty(); }
  // Picks the split for `kernel` (throws if a layer cannot run it). The default: kernel 2 when
  // every layer can run it and all have one width (as Exl2Layer's), else 1.
  void set_kernel(int kernel);
  // Overrides the split (for tuning and tests; reserve workspaces again).
  void set_split(const Exl2Split& split);
  // As Exl2Layer's (the default for groups of mixed widths that read >= 4 MB in all).
  bool set_runs();

 private:
  std::vector<const Exl2Layer*> layers_;
  Exl2Split split_;
  int width_ = 0;
};

// Scratch of the GEMV, one region per layer of a group launch: x permuted and rounded to f16 by
// the staging pass, its per-step scales and (K split without clusters) partial sums. One per
// stream; reserve() every layer and group it will serve before capturing a CUDA graph (reserve
// may reallocate).
class Exl2Workspace {
 public:
  Exl2Workspace() = default;
  void reserve(const Exl2Layer& layer, cudaStream_t stream);
  void reserve(const Exl2LayerGroup& group, cudaStream_t stream);
  // Region i (< kExl2MaxGroup).
  Exl2Scratch scratch(int i) const;
  bool fits(const Exl2Layer& layer) const;
  bool fits(const Exl2LayerGroup& group) const;

 private:
  bool fits(const Exl2Desc& d, const Exl2Split& split) const;
  void grow(const Exl2Desc& d, const Exl2Split& split);
  void allocate();
  DeviceBuffer buffer_;
  size_t xq_words_ = 0;
  size_t xscale_floats_ = 0;
  size_t partial_floats_ = 0;
};

inline constexpr int64_t kExl2GemvMaxRows = kExl2MaxBatch;

// x: [rows, in] F32|F16 with 1 <= rows <= 8; y: [rows, out] F32 (+ bias when add_bias and the
// layer has one). `workspace` must have been reserved for `layer`.
void exl2_gemv(const Exl2Layer& layer, const DeviceView& x, const DeviceView& y,
               Exl2Workspace& workspace, cudaStream_t stream, bool add_bias = true);

// y [1, out] = x @ W^T (+ bias) with x already staged for batch 1 in workspace.scratch(0) by
// the previous kernel: f16 x[c] at element layer.x_pos()[c] of its xq, 0 at the x_pad()
// elements, 1.0 in its xscale for every step (num_steps x 8 floats). No staging launch; the
// GEMV's f16 products are those of exl2_gemv with that f16 x.
void exl2_gemv_staged(const Exl2Layer& layer, const DeviceView& y, Exl2Workspace& workspace,
                      cudaStream_t stream, bool add_bias = true);

// y = (silu(gate) * up) @ W^T (+ bias), gate and up [1..8, in] F32, the product formed as
// decode_swiglu_cuda does: the MLP's SwiGLU and down projection in one GEMV. gelu:
// gelu_tanh(gate) * up (gemma's GeGLU).
// shift (MoE, or null): a device int64 of bytes added to the layer's pointers at run time, so
// the launch reads another layer of the same layout (exl2_same_layout); kernel 2, no bias.
void exl2_gemv_swiglu(const Exl2Layer& layer, const DeviceView& gate, const DeviceView& up,
                      const DeviceView& y, Exl2Workspace& workspace, cudaStream_t stream,
                      bool add_bias = true, bool gelu = false, const int64_t* shift = nullptr);

// ys[i] = x @ W_i^T (+ bias_i) for the layers of `group` in one staging and one GEMV launch:
// x [1..8, in] F32|F16, ys[i] [rows, out_i] F32. Bit-identical to exl2_gemv of each layer with
// the group's split.
// shifts (MoE, or empty): one device int64 per layer, as exl2_gemv_swiglu's shift.
void exl2_gemv_group(const Exl2LayerGroup& group, const DeviceView& x,
                     const std::vector<DeviceView>& ys, Exl2Workspace& workspace,
                     cudaStream_t stream, bool add_bias = true,
                     const std::vector<const int64_t*>& shifts = {});

// MoE decode: the k routed experts of a layer in one staging and one GEMV launch, instead of a
// group launch (gate, up) and a SwiGLU launch (down) per slot. `group`: expert 0's gate and up
// (or its down alone), with the split of the per-slot launches, so that every output is the
// per-slot launch's, bit for bit. Slot s of layer l reads the expert at shifts[s * stride + l]
// (exl2_shift_bytes), stages x row 0 (gate, up: x [1, in]) or, with up, silu(x[s]) * up[s]
// (down: x and up [slots, in]), and writes row s of ys[l] ([slots, out_l] F32).
// Whether the grouped launch serves `group` at `slots`: 1 to kExl2MoeMaxSlots slots, 1 or 2
// layers, kernel 2, no bias (else the caller runs per slot). A K split without clusters adds one
// launch that sums every slot's partials.
bool exl2_moe_grouped(const Exl2LayerGroup& group, int slots);
// Bytes of the staging scratch exl2_gemv_moe needs (x staged per layer and slot, batch 1).
size_t exl2_moe_scratch_bytes(const Exl2LayerGroup& group, int slots);
void exl2_gemv_moe(const Exl2LayerGroup& group, int slots, const DeviceView& x, const DeviceView* up,
                   const std::vector<DeviceView>& ys, const int64_t* shifts, int stride,
                   void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Whether b's device image has a's layout (shape, runs, unit table and section offsets, no
// bias, both runnable by kernel 2): a's launches then read b's weights when shifted by
// shift_bytes(a, b). MoE experts of one layer and one option have it.
bool exl2_same_layout(const Exl2Layer& a, const Exl2Layer& b);
inline int64_t exl2_shift_bytes(const Exl2Layer& a, const Exl2Layer& b) {
  return reinterpret_cast<const char*>(b.desc().q_weight) - reinterpret_cast<const char*>(a.desc().q_weight);
}

// w: [out, in] F16 with its input channels in q_perm order (column k is channel
// layer.q_perm()[k]); bit-exact with io::dequantize_exl2's values.
void exl2_dequantize_permuted(const Exl2Layer& layer, const DeviceView& w, cudaStream_t stream);

// Any row count: the GEMV for rows <= 8, else dequantize into w_scratch ([out, in] F16, q_perm
// order) and cuBLAS with x gathered to match (x must be F32 there; matmul_workspace as
// matmul_workspace_bytes(rows, in)), then bias.
// up ([rows, in] F32, or null): y = (silu(x) * up) @ W^T, the MLP's down projection with its
// SwiGLU (exl2_gemv_swiglu for rows <= 8; needs matmul_copies_fit(in) above).
void exl2_matmul(CublasHandle& cublas, const Exl2Layer& layer, const DeviceView& x,
                 const DeviceView& y, Exl2Workspace& workspace, const DeviceView& w_scratch,
                 const DeviceView& matmul_workspace, cudaStream_t stream, bool add_bias = true,
                 const DeviceView* up = nullptr, bool gelu = false);

}  // namespace exq::cuda
