// Linear layers of a model::LlamaModel on the GPU (internal to the CUDA runtime): dense
// f16/bf16 weights multiplied through cuBLAS, EXL2 layers through exq::cuda::Exl2Layer (GEMV
// up to 8 rows, dequantize + cuBLAS beyond), with an optional f32 bias. Also the size
// estimates the runtime checks against the memory budget before uploading anything.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/exl2_gemv.h"
#include "model/linear.h"

namespace exq::runtime::cuda {

// Scratch a linear's forward may use; sized by the runtime for its largest call.
struct LinearScratch {
  exq::cuda::CublasHandle* cublas = nullptr;
  exq::cuda::Exl2Workspace* exl2 = nullptr;
  exq::cuda::DeviceView matmul_ws;  // U8, matmul_workspace_bytes(rows, max in)
  exq::cuda::DeviceView dequant;    // F16 [max EXL2 out * in] (prefill of EXL2 layers), or empty
};

class GpuLinear {
 public:
  // Uploads `linear` (DenseLinear or model::Exl2Linear; anything else throws exq::Error naming
  // `name`). A dense F32 weight becomes F16 (BF16 when a value exceeds F16's range).
  // `has_bias`: the config says the layer has one (read back from the host layer).
  // `shared_dense`: an already uploaded copy of a dense weight to use instead (tied head).
  GpuLinear(const model::Linear& linear, bool has_bias, exq::cuda::CachingAllocator& alloc,
            cudaStream_t stream, const std::string& name,
            const exq::cuda::DeviceView& shared_dense = {});

  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  bool is_exl2() const { return !exl2_.empty(); }
  // The uploaded EXL2 layer, or null for a dense one.
  const exq::cuda::Exl2Layer* exl2_layer() const { return is_exl2() ? &exl2_ : nullptr; }
  exq::cuda::Exl2Layer* exl2_layer() { return is_exl2() ? &exl2_ : nullptr; }
  // The dense weight [out, in] F16|BF16 (empty for an EXL2 layer).
  const exq::cuda::DeviceView& dense_weight() const { return weight_; }
  bool has_bias() const { return !bias_.empty() || (is_exl2() && exl2_.has_bias()); }
  // Device bytes one multiply reads (weights, bias): for the bandwidth floor.
  size_t weight_bytes() const;
  // Elements of the f16 dequantization scratch a multiply of more than 8 rows needs.
  int64_t dequant_elems() const { return is_exl2() ? in_ * out_ : 0; }
  void reserve(exq::cuda::Exl2Workspace& ws, cudaStream_t stream) const;

  // y[rows, out] = x[rows, in] . W^T (+ bias); x, y F32 dense.
  void forward(const LinearScratch& s, const exq::cuda::DeviceView& x,
               const exq::cuda::DeviceView& y, cudaStream_t stream) const;
  // y [1, out] from x staged in the EXL2 workspace by the previous kernel (the decode attention:
  // exq::cuda::exl2_gemv_staged).
  void forward_staged(const LinearScratch& s, const exq::cuda::DeviceView& y,
                      cudaStream_t stream) const;
  // y = (silu(gate) * up) . W^T without a SwiGLU pass of its own: one EXL2 GEMV
  // (exq::cuda::exl2_gemv_swiglu) for rows <= 8, and for more rows (EXL2 or dense) the SwiGLU
  // formed while matmul rounds its input. False (nothing launched) for dense layers at rows
  // <= 8 and inputs too wide for matmul_copies_fit. gelu: gelu_tanh(gate) * up (gemma).
  bool forward_swiglu(const LinearScratch& s, const exq::cuda::DeviceView& gate,
                      const exq::cuda::DeviceView& up, const exq::cuda::DeviceView& y,
                      cudaStream_t stream, bool gelu = false) const;

 private:
  // Any row count through cuBLAS (EXL2: dequantized into s.dequant first), with up: the rows
  // multiplied are silu(x) * up.
  void matmul(const LinearScratch& s, const exq::cuda::DeviceView& x,
              const exq::cuda::DeviceView* up, const exq::cuda::DeviceView& y,
              cudaStream_t stream, bool gelu = false) const;

  int64_t in_ = 0, out_ = 0;
  exq::cuda::DeviceTensor dense_;     // [out, in] F16|BF16 when owned
  exq::cuda::DeviceView weight_;      // dense_ or the shared copy
  exq::cuda::DeviceTensor bias_;      // [out] F32, empty without bias
  exq::cuda::Exl2Layer exl2_;
};

// Linears that read the same input (q, k, v; gate, up). When all are EXL2 they also form one
// exq::cuda::Exl2LayerGroup (unless EXQ_DECODE_NO_GROUP is set, for A/B timing), and forward()
// of up to 8 rows is one group launch; otherwise, and in forward_each(), each linear runs on
// its own. The linears must outlive the group.
class GpuLinearGroup {
 public:
  GpuLinearGroup() = default;
  explicit GpuLinearGroup(std::vector<const GpuLinear*> linears);
  // Reserves `ws` for every linear and the group launch.
  void reserve(exq::cuda::Exl2Workspace& ws, cudaStream_t stream) const;
  // ys[i] = x . W_i^T (+ bias_i).
  void forward(const LinearScratch& s, const exq::cuda::DeviceView& x,
               const std::vector<exq::cuda::DeviceView>& ys, cudaStream_t stream) const;
  void forward_each(const LinearScratch& s, const exq::cuda::DeviceView& x,
                    const std::vector<exq::cuda::DeviceView>& ys, cudaStream_t stream) const;

 private:
  std::vector<const GpuLinear*> linears_;
  exq::cuda::Exl2LayerGroup exl2_;  // empty unless every linear is EXL2
};

// Bytes GpuLinear will take on the device for `linear` (an estimate, before uploading).
size_t gpu_linear_bytes(const model::Linear& linear, bool has_bias);

// Host tensor in a dtype the device kernels take: F16/BF16 as is, F32 converted to F16 (BF16
// when a value exceeds F16's range). Returns an empty tensor when `t` can be used in place.
Tensor device_weight_copy(const TensorView& t);

}  // namespace exq::runtime::cuda
