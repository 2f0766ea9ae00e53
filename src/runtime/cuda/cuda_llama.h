// CudaLlama: a Llama-family decoder (model::LlamaModel's weights: f16/bf16 and EXL2 linears)
// run on one NVIDIA GPU. Weights are uploaded once; the residual stream, norms and
// accumulators stay f32 as on the CPU (SmolLM2's residual reaches ~29,000); the KV cache is
// f16 (or f32). Prompts run in chunks through cuBLAS / the EXL2 dequantize path; single-token
// steps run the EXL2 GEMV and are replayed from a CUDA graph captured once: the token and the
// position live in device memory (the graph itself advances the position). Mixture-of-experts
// layers (mixtral, qwen3_moe): cuda_moe.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_tensor.h"
#include "io/hf_config.h"
#include "model/llama.h"
#include "runtime/draft.h"

namespace exq::runtime::cuda {

struct CudaOptions {
  int device = 0;
  int64_t max_context = 0;     // KV cache positions; 0: min(context_length(), 4096)
  // F16, F32, I8: the q8_0 cache (model/kv_quant.h: int8 codes and an fp16 scale per 32 values),
  // or U8: the q4 cache (rotated groups of 32, 4-bit codes with an fp16 step and minimum); the
  // quantized ones need head_dim 64, 96, 128 or 256. A CudaLlama built from a LlamaModel takes I8 / U8
  // when the model's kv_quant() is q8 / q4.
  DType kv_cache = DType::F16;
  int64_t prefill_chunk = 512;  // tokens per prefill pass (bounds the activation memory)
  // Device bytes for everything exq allocates (weights, cache, scratch); unlimited: what the
  // device has free.
  size_t vram_budget = exq::cuda::CachingAllocator::kUnlimited;
  bool cuda_graph = true;  // replay single-token steps from a captured graph
  // KV caches of max_context positions each: sequences that decode_batch steps together (exq
  // serve --parallel). The single-sequence API works on the selected one.
  int sequences = 1;
  // The experts of MoE layers 0 .. cpu_moe_layers-1 stay in host memory and run on the CPU
  // (llama.cpp's --n-cpu-moe): their device memory is saved, each such layer waits for the
  // device twice a pass, and the decode step runs without a graph. The weights the CudaLlama is
  // built from must then outlive it. A CudaLlama built from a LlamaModel takes the larger of
  // this and the model's cpu_moe_layers().
  int64_t cpu_moe_layers = 0;
};

// "" when `device` exists and has compute capability >= 8.0, else why CUDA cannot be used.
// Never throws.
std::string cuda_unavailable_reason(int device = 0);

class CudaLlama {
 public:
  // Uploads the weights (the model may be destroyed afterwards, unless experts stay on the CPU:
  // cpu_moe_layers). Throws exq::Error without a
  // usable GPU, for a configuration the kernels do not support, or when the model, the KV cache
  // of max_context positions and the scratch do not fit the budget or the free memory.
  CudaLlama(const model::LlamaModel& model, const CudaOptions& options = {});
  CudaLlama(const io::ModelConfig& config, const model::LlamaWeights& weights,
            const CudaOptions& options = {});
  ~CudaLlama();
  CudaLlama(CudaLlama&&) noexcept;
  CudaLlama& operator=(CudaLlama&&) noexcept;
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  const io::ModelConfig& config() const;
  const exq::cuda::DeviceInfo& device() const;
  int64_t position() const;     // tokens in the KV cache (of the selected sequence)
  int64_t max_context() const;  // its capacity
  void reset();                 // empties the cache
  void truncate(int64_t n);     // keeps the first n <= position() positions

  // Several sequences (CudaOptions::sequences): everything above and below except decode_batch
  // works on the selected one (0 at first); each keeps its own cache and length.
  int sequences() const;
  int selected_sequence() const;
  void select_sequence(int s);  // throws exq::Error outside [0, sequences())
  int64_t position_of(int s) const;
  // One token for each of 1..kMaxBatchRows distinct sequences in one pass (replayed from a graph
  // per row count): seqs[r]'s next position gets tokens[r]. Returns the logits [rows, vocab] F32
  // on the device, valid until the next call; nothing is synchronized. Throws exq::Error for a
  // bad count, a repeated or unknown sequence, an id outside the vocabulary or a full cache.
  static constexpr int kMaxBatchRows = 8;
  exq::cuda::DeviceView decode_batch(std::span<const int> seqs, std::span<const int32_t> tokens);

  // LlamaModel::forward's contract: runs tokens at positions position() .. +T-1 and appends
  // them to the cache; returns F32 host logits [T, vocab] when all_logits, else [1, vocab].
  // Throws exq::Error for no tokens, an id outside the vocabulary or a full cache (the cache
  // is unchanged then).
  Tensor forward(std::span<const int32_t> tokens, bool all_logits = false);

  // The same, leaving the last token's logits on the device: [1, vocab] F32, valid until the
  // next call. Nothing is synchronized.
  exq::cuda::DeviceView forward_last(std::span<const int32_t> tokens);
  // The same for every token: [T, vocab] F32 on the device (T <= kMaxRowsOnDevice), valid until
  // the next call. For checking speculative drafts; nothing is synchronized.
  static constexpr int64_t kMaxRowsOnDevice = 1 + runtime::kMaxDraftTokens;
  exq::cuda::DeviceView forward_rows(std::span<const int32_t> tokens);
  // forward()'s contract, the logits going to `rows` on the device as each prefill chunk
  // finishes: rows(logits [n, vocab] F32 of tokens first..first+n-1, first), valid while the
  // stream has not run past what `rows` enqueued. Waits for the stream at the end.
  using RowsFn = std::function<void(const exq::cuda::DeviceView& logits, int64_t first)>;
  void forward_rows_to(std::span<const int32_t> tokens, const RowsFn& rows);
  // forward()'s contract without the head: the final norm's output F32 [T, hidden] on the host
  // (what embedding models pool: runtime/embedding.h). Waits for the stream.
  Tensor hidden_states(std::span<const int32_t> tokens);
  // One step whose input token is already in token_slot() (e.g. written by the GPU sampler).
  exq::cuda::DeviceView decode_slot();
  // [1] I32 on the device: the input token of decode_slot().
  exq::cuda::DeviceView token_slot() const;

  // decode_slot() run eagerly with a CUDA event before each op group (embed+norm, qkv,
  // attention, o, norm, gate+up, swiglu, down or moe, head): GPU milliseconds per group summed over
  // the layers. Events between the groups stop the kernels overlapping, so the total exceeds a
  // graph replay; a breakdown, not a timing. The logits are left as decode_slot() leaves them.
  struct OpTime {
    std::string op;
    double ms = 0.0;
    int count = 0;  // occurrences of the group in the step
  };
  std::vector<OpTime> profile_decode_step();

  cudaStream_t stream() const;
  exq::cuda::CachingAllocator& allocator();

  struct Stats {
    size_t weight_bytes = 0;        // device bytes one decode step reads from weights
    size_t kv_bytes_per_token = 0;  // cache bytes per position (all layers, K and V)
    bool graph_captured = false;
    int64_t graph_replays = 0;
    int o_staged_layers = 0;  // layers whose decode attention stages the o projection's input
    int moe_device_layers = 0;  // MoE layers whose experts the decode graph picks on the device
  };
  Stats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace exq::runtime::cuda
