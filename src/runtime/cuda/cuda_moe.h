// A mixture-of-experts MLP layer (mixtral, qwen3_moe) on the GPU, internal to the CUDA runtime.
// The router runs as an f32-input GEMV and the routing (softmax, top k, renormalization) as a
// kernel, so the experts are chosen on the device. Single-token decode (inside the CUDA graph)
// then reads the chosen experts from device memory: dense experts through a table of weight
// pointers (moe_gemv_cuda), EXL2 experts through the GEMV of expert 0's layout shifted to the
// routed expert's copy (exl2_same_layout). Several rows (prefill, batches) read the routing back
// on the host and run each chosen expert once on its gathered rows. A layer whose experts stay
// in host memory (CudaOptions::cpu_moe_layers, llama.cpp's --n-cpu-moe) runs its whole MoE MLP on
// the CPU (model::moe_mlp) between a download of its input rows and an upload of the result.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/exl2_gemv.h"
#include "io/hf_config.h"
#include "model/llama_weights.h"
#include "model/moe.h"
#include "runtime/cuda/cuda_weights.h"

namespace exq::runtime::cuda {

// Buffers of the device-routed single-token step, shared by every MoE layer (persistent: the
// decode graph refers to them).
struct MoeStepBuffers {
  exq::cuda::DeviceTensor logits;  // F32 [experts]
  exq::cuda::DeviceTensor ids;     // I32 [k]
  exq::cuda::DeviceTensor weights; // F32 [k]
  exq::cuda::DeviceTensor shifts;  // I64 as U8 [k * 3 * 8]: gate, up, down of each slot (EXL2)
  exq::cuda::DeviceTensor gate, up;  // F32 [k, expert_inter]
  exq::cuda::DeviceTensor y;         // F32 [k, hidden]
  MoeStepBuffers(const io::ModelConfig& c, exq::cuda::CachingAllocator& a, cudaStream_t s);
  static size_t bytes(const io::ModelConfig& c);
};

// Buffers of a step over several rows (grown on demand; never used inside a graph).
struct MoeRowBuffers {
  int64_t rows = 0;
  exq::cuda::DeviceTensor logits, ids, weights, order, order_w, xg, yg, gate, up;
  std::vector<int32_t> host_ids, host_order;
  std::vector<float> host_weights, host_order_w;
  exq::cuda::PinnedBuffer host_in, host_out;  // experts on the CPU: the rows and the result
  // The grouped path (n * k slot rows): staged inputs (2-byte, width max(hidden, inter)), the
  // gate / up / down outputs, row scales, and the plan (row experts, combine positions and
  // weights, chunks) uploaded once a pass.
  int64_t slot_rows = 0;
  exq::cuda::DeviceTensor a0, a1, sgate, sup, sdown, scale, plan;
  std::vector<int32_t> host_plan;
  void ensure(const io::ModelConfig& c, int64_t n, exq::cuda::CachingAllocator& a, cudaStream_t s);
  void ensure_slots(const io::ModelConfig& c, int64_t n, exq::cuda::CachingAllocator& a, cudaStream_t s);
  // Both kinds' bytes (an upper bound for the estimate before uploading).
  static size_t bytes(const io::ModelConfig& c, int64_t n);
};

class MoeLayerGpu {
 public:
  // Uploads the router and the experts of layer `layer`; throws exq::Error naming the layer for
  // what the CUDA runtime does not run (an EXL2 router, a top k above kMoeMaxTopK, an activation
  // other than SiLU). on_cpu: nothing is uploaded; rows() runs the layer's MoE MLP on the CPU
  // from `w`, which must outlive this object.
  MoeLayerGpu(const io::ModelConfig& c, const model::LayerWeights& w, int64_t layer,
              exq::cuda::CachingAllocator& a, cudaStream_t s, bool on_cpu = false);

  // Whether decode() can run (experts chosen on the device, inside the graph); else why not
  // (EXQ_MOE_HOST=1 turns it off, for timing; experts on the CPU).
  bool device_routed() const { return why_host_.empty(); }
  // Whether rows() can run the grouped expert GEMM (its buffers: MoeRowBuffers::ensure_slots);
  // each pass picks it or a launch set per expert by moe_grouped_wins.
  bool grouped_rows() const { return grouped_rows_; }
  const std::string& why_host() const { return why_host_; }
  // Device bytes a single-token step reads (the router and k experts, on average).
  size_t step_bytes() const;
  int64_t dequant_elems() const;  // the largest EXL2 expert's [out * in]
  void reserve(exq::cuda::Exl2Workspace& ws, cudaStream_t s) const;

  // out [1, hidden] = the layer's MoE MLP of xn [1, hidden], without a host sync. mark (optional)
  // is called before the routing, the experts' gate / up, their down and the combine (the
  // eager per-op profile's boundaries).
  void decode(MoeStepBuffers& b, const LinearScratch& sc, const exq::cuda::DeviceView& xn,
              const exq::cuda::DeviceView& out, cudaStream_t s,
              const std::function<void(const char*)>& mark = {}) const;
  // out [n, hidden] for any n rows: routing read back on the host, each chosen expert once.
  void rows(MoeRowBuffers& b, const LinearScratch& sc, const exq::cuda::DeviceView& xn,
            const exq::cuda::DeviceView& out, cudaStream_t s) const;

 private:
  struct Expert {
    std::unique_ptr<GpuLinear> gate, up, down;
    // 0 gate, 1 up, 2 down (the order of the weight and shift tables).
    const GpuLinear* part(int i) const { return i == 0 ? gate.get() : i == 1 ? up.get() : down.get(); }
  };
  void router_logits(const exq::cuda::DeviceView& xn, float* logits, cudaStream_t s) const;
  // rows() through the grouped expert GEMM: every routed expert's rows in one launch for gate +
  // up and one for down (expert_gemm.h), the slots staged by expert and summed per token.
  void rows_grouped(MoeRowBuffers& b, const model::ExpertGroups& groups, int64_t n, const exq::cuda::DeviceView& xn,
                    const exq::cuda::DeviceView& out, cudaStream_t s) const;

  int64_t experts_ = 0, k_ = 0, inter_ = 0, hidden_ = 0;
  bool renormalize_ = true;
  exq::cuda::DeviceTensor router_;  // [experts, hidden] F16|BF16|F32, as stored
  std::vector<Expert> experts_w_;
  // Device table of weight pointers: router, then gate, up and down of every expert (dense).
  exq::cuda::DeviceTensor table_;
  DType router_dtype_ = DType::F16, expert_dtype_ = DType::F16;
  bool exl2_ = false;  // device routing through shifted EXL2 launches
  exq::cuda::DeviceTensor shift_table_;  // I64 [experts][3] bytes from expert 0's layers
  exq::cuda::Exl2LayerGroup gate_up0_;   // expert 0's gate and up, one launch
  // The k slots in one launch for gate + up and one for down (exl2_gemv_moe), when it serves both
  // (else a launch pair per slot); down0_ is expert 0's down with its own split. The scratch is
  // the layer's own (x staged per slot, K-split partials).
  bool grouped_ = false;
  exq::cuda::Exl2LayerGroup down0_;
  exq::cuda::DeviceTensor moe_scratch_;  // x staged per slot: gate + up regions, then down's
  size_t gate_up_scratch_ = 0;
  // The grouped expert GEMM serves rows() (EXL2 experts of one layout whose units it reads, or
  // dense f16 / bf16 experts); perm_table_: each expert's gate, up and down q_perm (EXL2).
  bool grouped_rows_ = false, force_grouped_ = false;
  size_t expert_bytes_ = 0;  // expert 0's three weights
  exq::cuda::DeviceTensor perm_table_;
  std::string why_host_;
  // Experts on the CPU: the host weights and the config model::moe_mlp reads.
  const model::LayerWeights* host_ = nullptr;
  std::unique_ptr<io::ModelConfig> host_config_;
  void rows_on_cpu(MoeRowBuffers& b, const exq::cuda::DeviceView& xn, const exq::cuda::DeviceView& out,
                   cudaStream_t s) const;
};

// Whether a pass of `slots` routed rows (tokens x k) over `active` distinct experts of [inter,
// hidden] (expert_bytes: one expert's three weights as stored) is faster through the grouped
// expert GEMM than through a launch set per expert (dequantize + cuBLAS, or the EXL2 GEMV for
// <= 8 rows); thresholds measured on the H200.
bool moe_grouped_wins(bool exl2, int64_t slots, int64_t active, int64_t hidden, int64_t inter, size_t expert_bytes);

// Bytes MoeLayerGpu will take for layer `w` (an estimate, before uploading): dense and EXL2.
void moe_layer_bytes(const model::LayerWeights& w, size_t& dense, size_t& exl2, int64_t& max_exl2);

}  // namespace exq::runtime::cuda
