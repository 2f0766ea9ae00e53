// The CUDA runtime's model state (CudaLlama::Impl), shared by cuda_llama.cpp (upload, prefill,
// the public API) and cuda_llama_decode.cpp (the single-token step, its CUDA graph and its
// per-op profile). Private to those two files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <memory>
#include <span>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/stream.h"
#include "runtime/cuda/cuda_llama.h"
#include "runtime/cuda/cuda_moe.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {

namespace gpu = exq::cuda;

inline size_t rounded(size_t bytes) { return gpu::CachingAllocator::round_size(bytes); }

struct LayerGpu {
  gpu::DeviceTensor attn_norm, ffn_norm;  // [hidden] F32
  gpu::DeviceTensor q_norm, k_norm;       // qwen3: [head_dim] F32 (each head of q, k), else empty
  gpu::DeviceTensor post_attn_norm, post_ffn_norm;  // gemma2 / 3: [hidden] F32, else empty
  int window = 0;                         // sliding-window attention: its latest keys; 0: all
  bool local_rope = false;                // gemma3's sliding layers: cos_local / sin_local
  std::unique_ptr<GpuLinear> q, k, v, o, gate, up, down;  // gate, up, down: null on MoE layers
  std::unique_ptr<MoeLayerGpu> moe;  // mixture-of-experts layers, else null
  gpu::DeviceTensor k_cache, v_cache;  // [sequences * kv_heads, capacity, head_dim]
  // q8 cache: F16 [sequences * kv_heads, capacity, head_dim / 32]; q4: (step, minimum) pairs,
  // F16 [sequences * kv_heads, capacity, head_dim / 16]
  gpu::DeviceTensor k_scale, v_scale;
  // q, k, v and gate, up: one launch each in the decode step when all are EXL2.
  GpuLinearGroup qkv, gate_up;
};

struct Dims {
  int64_t hidden, heads, kv_heads, head_dim, inter, vocab, q_dim, kv_dim, max_in;
  explicit Dims(const io::ModelConfig& c)
      : hidden(c.hidden_size), heads(c.num_attention_heads), kv_heads(c.num_key_value_heads),
        head_dim(c.head_dim), inter(c.intermediate_size), vocab(c.vocab_size), q_dim(c.q_dim()),
        kv_dim(c.kv_dim()),
        max_in(std::max({c.hidden_size, c.q_dim(), c.intermediate_size, c.expert_intermediate})) {}
};

// Activations of one pass over up to `rows` tokens.
struct Activations {
  gpu::DeviceTensor ids, x, xn, q, k, v, att, proj, gate, up, mm_ws;
  Activations(const Dims& d, int64_t rows, gpu::CachingAllocator& a, cudaStream_t s)
      : ids(DType::I32, {rows}, a, s), x(DType::F32, {rows, d.hidden}, a, s),
        xn(DType::F32, {rows, d.hidden}, a, s), q(DType::F32, {rows, d.heads, d.head_dim}, a, s),
        k(DType::F32, {rows, d.kv_heads, d.head_dim}, a, s),
        v(DType::F32, {rows, d.kv_heads, d.head_dim}, a, s),
        att(DType::F32, {rows, d.heads, d.head_dim}, a, s), proj(DType::F32, {rows, d.hidden}, a, s),
        gate(DType::F32, {rows, d.inter}, a, s), up(DType::F32, {rows, d.inter}, a, s),
        mm_ws(DType::U8, {static_cast<int64_t>(gpu::matmul_workspace_bytes(rows, d.max_in))}, a, s) {}

  static size_t bytes(const Dims& d, int64_t rows) {
    const auto r = static_cast<size_t>(rows);
    return rounded(r * 4) + 3 * rounded(r * d.hidden * 4) + 2 * rounded(r * d.q_dim * 4) +
           2 * rounded(r * d.kv_dim * 4) + 2 * rounded(r * d.inter * 4) +
           rounded(gpu::matmul_workspace_bytes(rows, d.max_in));
  }
};

// The first n rows of every activation.
struct Views {
  gpu::DeviceView ids, x, xn, q, k, v, att, proj, gate, up, mm_ws, q2, k2, v2, att2;
  Views(const Activations& a, const Dims& d, int64_t n)
      : ids(a.ids.view().slice0(0, n)), x(a.x.view().slice0(0, n)), xn(a.xn.view().slice0(0, n)),
        q(a.q.view().slice0(0, n)), k(a.k.view().slice0(0, n)), v(a.v.view().slice0(0, n)),
        att(a.att.view().slice0(0, n)), proj(a.proj.view().slice0(0, n)),
        gate(a.gate.view().slice0(0, n)), up(a.up.view().slice0(0, n)), mm_ws(a.mm_ws.view()),
        q2(q.reshape({n, d.q_dim})), k2(k.reshape({n, d.kv_dim})), v2(v.reshape({n, d.kv_dim})),
        att2(att.reshape({n, d.q_dim})) {}
};

class CudaLlama::Impl {
 public:
  using RowsFn = CudaLlama::RowsFn;
  Impl(const io::ModelConfig& config, const model::LlamaWeights& w, const CudaOptions& options);
  ~Impl();

  void check_tokens(std::span<const int32_t> tokens) const;
  // Runs tokens through every layer from position `length`; the logits of each chunk of rows to
  // `all` (CudaLlama::RowsFn) when given, else of all rows into `rows_logits` (device) with
  // `keep_rows`, else the last row's into `logits`; with `hidden`, the final norm's output of each
  // chunk to it instead of any logits.
  void prefill(std::span<const int32_t> tokens, const RowsFn* all, bool keep_rows = false,
               const RowsFn* hidden = nullptr);
  gpu::DeviceView decode();  // the token in the slot, at position `length`
  // Several sequences: `cur` is the selected one, `length` its length (the others' in lengths).
  int seqs = 1, cur = 0;
  std::vector<int64_t> lengths;
  gpu::DeviceView kcache(const LayerGpu& L) const { return seq_view(L.k_cache); }
  gpu::DeviceView vcache(const LayerGpu& L) const { return seq_view(L.v_cache); }
  bool q8() const { return opts.kv_cache == DType::I8; }
  bool q4() const { return opts.kv_cache == DType::U8; }  // codes two a byte
  gpu::DeviceView seq_view(const gpu::DeviceTensor& t) const {
    return t.view().slice0(cur * dims.kv_heads, (cur + 1) * dims.kv_heads);
  }
  // Elements of one sequence's cache (q4: bytes, two codes each).
  int64_t cache_elems() const { return dims.kv_heads * capacity * dims.head_dim / (q4() ? 2 : 1); }
  void select(int s);
  void batch_body(int rows);
  void launch_batch(int rows);  // batch_body, replayed from the row count's graph
  template <typename C>
  void attend_rows(const LayerGpu& L, const Views& v, int rows);
  void decode_body();        // the kernels of one step (captured into the graph)
  // qwen3: RMSNorm of each head of q [T, heads, head_dim] and k [T, kv_heads, head_dim], in place.
  void qk_norm(const LayerGpu& L, const gpu::DeviceView& q, const gpu::DeviceView& k) const;
  void set_position(int64_t n) {
    length = n;
    pos_dirty = true;
  }

  io::ModelConfig config;
  Dims dims;
  CudaOptions opts;
  gpu::DeviceInfo info;
  int64_t capacity = 0, length = 0, chunk = 0;
  size_t weight_bytes = 0;  // read by one decode step
  size_t exl2_bytes = 0;    // estimate of the EXL2 layers (outside the allocator's budget)
  int64_t replays = 0;
  int o_staged_layers = 0;  // in the last decode_body

  std::unique_ptr<gpu::CachingAllocator> alloc;  // before every tensor: they return to it
  gpu::Stream stream;
  gpu::CublasHandle cublas;
  gpu::Exl2Workspace exl2_ws;
  gpu::DeviceTensor cublas_ws, embed, final_norm, cos, sin, dequant;
  gpu::DeviceTensor cos_local, sin_local;  // gemma3's sliding layers (rope_local_theta), else empty
  const gpu::DeviceTensor& cos_of(const LayerGpu& L) const { return L.local_rope ? cos_local : cos; }
  const gpu::DeviceTensor& sin_of(const LayerGpu& L) const { return L.local_rope ? sin_local : sin; }
  // The head's logits of rows xn into out, softcapped for gemma2.
  void head_logits(const LinearScratch& sc, const gpu::DeviceView& xn, const gpu::DeviceView& out);
  std::unique_ptr<GpuLinear> head;
  std::vector<LayerGpu> layers;
  // Single-token step: persistent buffers, which the captured graph refers to.
  gpu::DeviceTensor slot;  // I32 [2]: input token, position
  std::unique_ptr<Activations> dec;
  gpu::DeviceTensor logits, attn_ws;
  gpu::DeviceTensor rows_logits;  // [kMaxRowsOnDevice, vocab], allocated by the first forward_rows
  // forward_rows of 2..8 tokens replays a graph per count (pass_body), its position in pass_pos.
  std::unique_ptr<Activations> pass;
  gpu::DeviceTensor pass_pos;  // I32 [1]
  int32_t pass_host_pos = 0;
  std::vector<cudaGraphExec_t> pass_graphs;  // by sequence and row count, null until captured
  // decode_batch: ids [8], positions [8], sequences [8] (I32 on the device, from batch_host), the
  // attention's workspace of 8 rows, the logits.
  gpu::DeviceTensor batch_io, batch_ws, batch_logits;
  std::vector<int32_t> batch_host;
  std::vector<cudaGraphExec_t> batch_graphs;  // by row count
  void ensure_pass();  // pass, pass_pos and pass_graphs, made by the first pass or batch
  // Mixture of experts: the decode step's buffers (when a layer routes on the device), the row
  // buffers of prefill and batches. moe_any: passes and batches run eagerly (their MoE layers
  // read the routing back on the host); moe_host_decode: so does the single-token step (a layer
  // cannot route on the device: no graph).
  std::unique_ptr<MoeStepBuffers> moe_step;
  MoeRowBuffers moe_rows;
  bool moe_any = false, moe_host_decode = false;
  int moe_device_layers = 0;
  // The MLP of layer L for rows xn into out (delta of the residual): the host-routed MoE path.
  void moe_mlp_rows(const LayerGpu& L, const gpu::DeviceView& xn, const gpu::DeviceView& out,
                    const gpu::DeviceView& mm_ws);
  void run_pass(std::span<const int32_t> tokens);
  std::vector<cudaGraphExec_t> graphs;  // the decode step's, by sequence
  bool pos_dirty = true;
  int32_t host_pos = 0;  // source of the position copy
  bool pdl = false;      // programmatic dependent launch of the step's small kernels
  // profile_decode_step(): an event before each op group of an eager step.
  std::vector<gpu::Event> events;
  std::vector<const char*> marks;
  bool profiling = false;

  void sync_position();
  void mark(const char* label) {
    if (!profiling) return;
    if (marks.size() == events.size()) events.emplace_back();
    events[marks.size()].record(stream);
    marks.push_back(label);
  }

 private:
  LinearScratch scratch(const gpu::DeviceView& mm_ws) {
    return LinearScratch{&cublas, &exl2_ws, mm_ws, dequant.empty() ? gpu::DeviceView() : dequant.view()};
  }
  // x += delta (RMSNorm(delta) * post first, when post is set: gemma2 / 3; times granite's
  // residual multiplier), out = RMSNorm(x) * w.
  void norm(const gpu::DeviceView& x, const gpu::DeviceView* delta, const gpu::DeviceTensor& w,
            const gpu::DeviceView& out, const gpu::DeviceTensor* post = nullptr) {
    add_rmsnorm_cuda(x.data<float>(), delta ? delta->data<float>() : nullptr,
                     w.view().data<float>(), out.data<float>(), static_cast<int>(x.dim(0)),
                     static_cast<int>(dims.hidden), static_cast<float>(config.rms_norm_eps), stream,
                     post && !post->empty() ? post->view().data<float>() : nullptr, residual_scale());
  }
  float residual_scale() const { return static_cast<float>(config.residual_multiplier); }
  bool gelu() const { return config.activation == io::Activation::GeluTanh; }
  static const float* post_of(const gpu::DeviceTensor& t) { return t.empty() ? nullptr : t.view().data<float>(); }
  const gpu::DeviceTensor& next_norm(size_t l) const {
    return l + 1 < layers.size() ? layers[l + 1].attn_norm : final_norm;
  }
  void upload(const model::LlamaWeights& w);
  void ensure_dequant(int64_t elems);
  // `grouped`: q/k/v and gate/up as one EXL2 group launch each (up to 8 rows, as the decode).
  // `batch_rows` > 0: the rows are one token of distinct sequences (decode_batch's), attended
  // by the decode kernel over their own caches; start is then unused.
  void layers_prefill(const Views& v, gpu::StartPos start, bool grouped = false, int batch_rows = 0);
  void pass_body(int64_t rows);  // a draft check's kernels, with its position in pass_pos
  // Returns true when the attention also staged its output for L.o (forward_staged).
  template <typename C>
  bool attend(const LayerGpu& L, const Views& v);
  // The attention arguments every decode launch shares (caches of the whole layer, scales).
  template <typename C>
  gpu::DecodeAttention<C> decode_args(const LayerGpu& L, const Views& v) const;
  // Captures what `body` launches on the stream into an instantiated graph; exq::Error naming
  // `what` when CUDA refuses it.
  cudaGraphExec_t capture_graph(const std::string& what, const std::function<void()>& body);
  void capture();
  int32_t* pos_ptr() const { return slot.view().data<int32_t>() + 1; }
  float scale() const { return static_cast<float>(config.attention_scale()); }
};

}  // namespace exq::runtime::cuda
