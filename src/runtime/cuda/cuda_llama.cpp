#include "runtime/cuda/cuda_llama.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "backend/cpu/rotary.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/cublas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/embedding.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/kv_cache.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/rotary.h"
#include "backend/cuda/stream.h"
#include "model/rope.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {

namespace gpu = exq::cuda;

namespace {

constexpr size_t kCublasWorkspace = size_t{32} << 20;  // cuBLAS's advice for Hopper
constexpr size_t kDeviceReserve = size_t{512} << 20;   // context, cuBLAS, driver
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

size_t rounded(size_t bytes) { return gpu::CachingAllocator::round_size(bytes); }
double gib(size_t bytes) { return static_cast<double>(bytes) / kGiB; }

struct LayerGpu {
  gpu::DeviceTensor attn_norm, ffn_norm;  // [hidden] F32
  std::unique_ptr<GpuLinear> q, k, v, o, gate, up, down;
  gpu::DeviceTensor k_cache, v_cache;  // [kv_heads, capacity, head_dim]
  // Decode: q, k, v and gate, up as one launch each when all are EXL2 (empty otherwise).
  gpu::Exl2LayerGroup qkv, gate_up;
};

// The EXL2 group of `linears` (one launch for all), or an empty group when one is dense or
// EXQ_DECODE_NO_GROUP is set (A/B timing).
gpu::Exl2LayerGroup decode_group(std::initializer_list<const GpuLinear*> linears) {
  static const bool off = std::getenv("EXQ_DECODE_NO_GROUP") != nullptr;
  std::vector<const gpu::Exl2Layer*> layers;
  for (const GpuLinear* l : linears) {
    if (off || l->exl2_layer() == nullptr) return {};
    layers.push_back(l->exl2_layer());
  }
  return gpu::Exl2LayerGroup(layers);
}

struct Dims {
  int64_t hidden, heads, kv_heads, head_dim, inter, vocab, q_dim, kv_dim, max_in;
  explicit Dims(const io::ModelConfig& c)
      : hidden(c.hidden_size), heads(c.num_attention_heads), kv_heads(c.num_key_value_heads),
        head_dim(c.head_dim), inter(c.intermediate_size), vocab(c.vocab_size), q_dim(c.q_dim()),
        kv_dim(c.kv_dim()), max_in(std::max({c.hidden_size, c.q_dim(), c.intermediate_size})) {}
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

bool has_bias(const io::ModelConfig& c, int which) {  // 0 qkv, 1 o, 2 mlp
  return which == 0 ? c.attention_qkv_bias : which == 1 ? c.attention_out_bias : c.mlp_bias;
}

}  // namespace

std::string cuda_unavailable_reason(int device) {
  try {
    gpu::require_device(device);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

class CudaLlama::Impl {
 public:
  Impl(const io::ModelConfig& config, const model::LlamaWeights& w, const CudaOptions& options);
  ~Impl();

  void check_tokens(std::span<const int32_t> tokens) const;
  // Runs tokens through every layer from position `length`; logits of all rows into `all`
  // (host [T, vocab]) when given, else the last row's into `logits`.
  void prefill(std::span<const int32_t> tokens, Tensor* all);
  gpu::DeviceView decode();  // the token in the slot, at position `length`
  void decode_body();        // the kernels of one step (captured into the graph)
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

  std::unique_ptr<gpu::CachingAllocator> alloc;  // before every tensor: they return to it
  gpu::Stream stream;
  gpu::CublasHandle cublas;
  gpu::Exl2Workspace exl2_ws;
  gpu::DeviceTensor cublas_ws, embed, final_norm, cos, sin, dequant;
  std::unique_ptr<GpuLinear> head;
  std::vector<LayerGpu> layers;
  // Single-token step: persistent buffers, which the captured graph refers to.
  gpu::DeviceTensor slot;  // I32 [2]: input token, position
  std::unique_ptr<Activations> dec;
  gpu::DeviceTensor logits, attn_ws;
  cudaGraphExec_t graph = nullptr;
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
  void norm(const gpu::DeviceView& x, const gpu::DeviceView* delta, const gpu::DeviceTensor& w,
            const gpu::DeviceView& out) {
    add_rmsnorm_cuda(x.data<float>(), delta ? delta->data<float>() : nullptr,
                     w.view().data<float>(), out.data<float>(), static_cast<int>(x.dim(0)),
                     static_cast<int>(dims.hidden), static_cast<float>(config.rms_norm_eps), stream);
  }
  const gpu::DeviceTensor& next_norm(size_t l) const {
    return l + 1 < layers.size() ? layers[l + 1].attn_norm : final_norm;
  }
  void upload(const model::LlamaWeights& w);
  void ensure_dequant(int64_t elems);
  void layers_prefill(const Views& v, int start);
  template <typename C>
  void attend(const LayerGpu& L, const Views& v);
  void capture();
  int32_t* pos_ptr() const { return slot.view().data<int32_t>() + 1; }
  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims.head_dim))); }
};

CudaLlama::Impl::Impl(const io::ModelConfig& c, const model::LlamaWeights& w, const CudaOptions& o)
    : config(c), dims(c), opts(o), info(gpu::require_device(o.device)) {
  const Dims& d = dims;
  EXQ_CHECK(d.head_dim % 2 == 0 && gpu::attention_supports(DType::F32, d.head_dim),
            "cuda: head_dim {} is not supported (even, at most {})", d.head_dim,
            gpu::kAttentionMaxHeadDim);
  EXQ_CHECK(d.kv_heads > 0 && d.heads % d.kv_heads == 0,
            "cuda: {} attention heads are not a multiple of {} kv heads", d.heads, d.kv_heads);
  EXQ_CHECK(o.kv_cache == DType::F16 || o.kv_cache == DType::F32,
            "cuda: the KV cache must be F16 or F32, got {}", dtype_name(o.kv_cache));
  EXQ_CHECK(o.prefill_chunk >= 1, "cuda: prefill chunk must be >= 1, got {}", o.prefill_chunk);
  EXQ_CHECK(static_cast<int64_t>(w.layers.size()) == c.num_hidden_layers,
            "cuda: model has {} layers, config says {}", w.layers.size(), c.num_hidden_layers);
  capacity = o.max_context > 0 ? o.max_context : std::min<int64_t>(c.max_position_embeddings, 4096);
  EXQ_CHECK(capacity >= 1 && capacity <= INT_MAX / 2, "cuda: context of {} positions is not supported",
            capacity);
  chunk = std::min(o.prefill_chunk, capacity);

  // Everything must fit before anything is uploaded: a clear error instead of a failed cudaMalloc.
  size_t dense = rounded(static_cast<size_t>(w.embed.numel()) * dtype_size(w.embed.dtype())) +
                 2 * rounded(static_cast<size_t>(d.hidden) * 4) * (static_cast<size_t>(c.num_hidden_layers) + 1);
  auto add = [&](const model::Linear& lin, bool bias) {
    (dynamic_cast<const model::DenseLinear*>(&lin) ? dense : exl2_bytes) += gpu_linear_bytes(lin, bias);
  };
  int64_t max_exl2 = 0;
  for (const model::LayerWeights& L : w.layers) {
    const std::pair<const model::Linear*, int> lin[] = {{L.q.get(), 0},    {L.k.get(), 0},  {L.v.get(), 0},
                                                        {L.o.get(), 1},    {L.gate.get(), 2}, {L.up.get(), 2},
                                                        {L.down.get(), 2}};
    for (const auto& [p, which] : lin) {
      add(*p, has_bias(c, which));
      if (!dynamic_cast<const model::DenseLinear*>(p)) max_exl2 = std::max(max_exl2, p->in_features() * p->out_features());
    }
  }
  const bool share_head = w.head_tied && (w.embed.dtype() == DType::F16 || w.embed.dtype() == DType::BF16);
  if (!share_head) add(*w.head, false);
  const size_t kv = static_cast<size_t>(c.num_hidden_layers) * 2 *
                    rounded(static_cast<size_t>(d.kv_heads * capacity * d.head_dim) * dtype_size(o.kv_cache));
  const size_t scratch = Activations::bytes(d, chunk) + rounded(static_cast<size_t>(chunk * d.vocab) * 4) +
                         Activations::bytes(d, 1) + rounded(static_cast<size_t>(d.vocab) * 4) +
                         rounded(static_cast<size_t>(max_exl2) * 2) + kCublasWorkspace +
                         2 * rounded(static_cast<size_t>(capacity * d.head_dim / 2) * 4);
  const size_t need = dense + exl2_bytes + kv + scratch;
  const size_t free_bytes = info.free_memory > kDeviceReserve ? info.free_memory - kDeviceReserve : 0;
  const size_t available = std::min(o.vram_budget, free_bytes);
  if (need > available)
    throw Error(fmt::format(
        "the model does not fit on cuda:{} ({}): it needs about {:.2f} GiB (weights {:.2f}, KV cache "
        "{:.2f} for {} positions, scratch {:.2f}) but {:.2f} GiB are available ({}); lower the "
        "context or use the CPU",
        o.device, info.name, gib(need), gib(dense + exl2_bytes), gib(kv), capacity, gib(scratch),
        gib(available),
        o.vram_budget < free_bytes ? fmt::format("budget {:.2f} GiB", gib(o.vram_budget))
                                   : fmt::format("{:.2f} GiB free", gib(info.free_memory))));
  alloc = std::make_unique<gpu::CachingAllocator>(
      o.vram_budget == gpu::CachingAllocator::kUnlimited ? o.vram_budget : o.vram_budget - exl2_bytes);
  upload(w);
}

void CudaLlama::Impl::upload(const model::LlamaWeights& w) {
  const Dims& d = dims;
  const cudaStream_t s = stream;
  gpu::CachingAllocator& a = *alloc;
  cublas_ws = gpu::DeviceTensor(DType::U8, {static_cast<int64_t>(kCublasWorkspace)}, a, s);
  cublas.set_stream(s);
  cublas.set_workspace(cublas_ws.raw(), kCublasWorkspace);

  embed = gpu::to_device(w.embed, a, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
  auto upload_f32 = [&](const Tensor& t) { return gpu::to_device(t.view(), a, s); };
  int64_t max_exl2 = 0;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const model::LayerWeights& L = w.layers[l];
    const std::string p = fmt::format("model.layers.{}.", l);
    auto lin = [&](const model::Linear& x, int which, const char* name) {
      auto g = std::make_unique<GpuLinear>(x, has_bias(config, which), a, s, p + name);
      max_exl2 = std::max(max_exl2, g->dequant_elems());
      return g;
    };
    LayerGpu G;
    G.attn_norm = upload_f32(L.attn_norm);
    G.ffn_norm = upload_f32(L.ffn_norm);
    G.q = lin(*L.q, 0, "self_attn.q_proj");
    G.k = lin(*L.k, 0, "self_attn.k_proj");
    G.v = lin(*L.v, 0, "self_attn.v_proj");
    G.o = lin(*L.o, 1, "self_attn.o_proj");
    G.gate = lin(*L.gate, 2, "mlp.gate_proj");
    G.up = lin(*L.up, 2, "mlp.up_proj");
    G.down = lin(*L.down, 2, "mlp.down_proj");
    const Shape cache = {d.kv_heads, capacity, d.head_dim};
    G.k_cache = gpu::DeviceTensor(opts.kv_cache, cache, a, s);
    G.v_cache = gpu::DeviceTensor(opts.kv_cache, cache, a, s);
    CUDA_CHECK(cudaMemsetAsync(G.k_cache.raw(), 0, G.k_cache.nbytes(), s));
    CUDA_CHECK(cudaMemsetAsync(G.v_cache.raw(), 0, G.v_cache.nbytes(), s));
    for (const GpuLinear* g : {G.q.get(), G.k.get(), G.v.get(), G.o.get(), G.gate.get(), G.up.get(), G.down.get()})
      weight_bytes += g->weight_bytes();
    weight_bytes += 2 * G.attn_norm.nbytes();
    layers.push_back(std::move(G));
    CUDA_CHECK(cudaStreamSynchronize(s));
  }
  final_norm = upload_f32(w.final_norm);
  const bool share = w.head_tied && (embed.dtype() == DType::F16 || embed.dtype() == DType::BF16);
  head = std::make_unique<GpuLinear>(*w.head, false, a, s, w.head_tied ? "lm_head (tied)" : "lm_head",
                                     share ? embed.view() : gpu::DeviceView());
  weight_bytes += head->weight_bytes() + final_norm.nbytes() +
                  static_cast<size_t>(d.hidden) * dtype_size(embed.dtype());

  const cpu::RopeTable rope = cpu::make_rope_table(model::rope_inv_freq(config), capacity);
  cos = upload_f32(rope.cos);
  sin = upload_f32(rope.sin);
  ensure_dequant(max_exl2);

  pdl = gpu::decode_pdl_enabled();
  slot = gpu::DeviceTensor(DType::I32, {2}, a, s);
  CUDA_CHECK(cudaMemsetAsync(slot.raw(), 0, slot.nbytes(), s));
  dec = std::make_unique<Activations>(d, 1, a, s);
  logits = gpu::DeviceTensor(DType::F32, {1, d.vocab}, a, s);
  attn_ws = gpu::DeviceTensor(
      DType::F32,
      {static_cast<int64_t>(gpu::attention_decode_workspace_floats(static_cast<int>(d.heads),
                                                                   static_cast<int>(d.head_dim)))},
      a, s);
  gpu::attention_decode_reset_cuda(attn_ws.view().data<float>(), static_cast<int>(d.heads),
                                   static_cast<int>(d.head_dim), s);
  for (LayerGpu& L : layers) {
    for (const GpuLinear* g : {L.q.get(), L.k.get(), L.v.get(), L.o.get(), L.gate.get(), L.up.get(), L.down.get()})
      g->reserve(exl2_ws, s);
    L.qkv = decode_group({L.q.get(), L.k.get(), L.v.get()});
    L.gate_up = decode_group({L.gate.get(), L.up.get()});
    if (!L.qkv.empty()) exl2_ws.reserve(L.qkv, s);
    if (!L.gate_up.empty()) exl2_ws.reserve(L.gate_up, s);
  }
  head->reserve(exl2_ws, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
}

CudaLlama::Impl::~Impl() {
  cudaStreamSynchronize(stream);  // kernels may still read buffers; errors are moot here
  if (graph) cudaGraphExecDestroy(graph);
}

void CudaLlama::Impl::ensure_dequant(int64_t elems) {
  if (elems <= 0 || (!dequant.empty() && dequant.numel() >= elems)) return;
  dequant = gpu::DeviceTensor();  // the decode graph never uses it
  dequant = gpu::DeviceTensor(DType::F16, {elems}, *alloc, stream);
}

void CudaLlama::Impl::check_tokens(std::span<const int32_t> tokens) const {
  const auto T = static_cast<int64_t>(tokens.size());
  EXQ_CHECK(T > 0, "forward: no tokens");
  for (int32_t id : tokens)
    EXQ_CHECK(id >= 0 && id < dims.vocab, "forward: token id {} is outside the vocabulary ({} tokens)",
              id, dims.vocab);
  EXQ_CHECK(length + T <= capacity, "forward: {} tokens after {} exceed the cache of {}", T, length,
            capacity);
}

void CudaLlama::Impl::layers_prefill(const Views& v, int start) {
  const cudaStream_t s = stream;
  const LinearScratch sc = scratch(v.mm_ws);
  const bool fast_attention = gpu::attention_prefill_fast_supports(opts.kv_cache, dims.head_dim);
  gpu::embedding(v.ids, embed, v.x, s);
  norm(v.x, nullptr, layers[0].attn_norm, v.xn);
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerGpu& L = layers[l];
    L.q->forward(sc, v.xn, v.q2, s);
    L.k->forward(sc, v.xn, v.k2, s);
    L.v->forward(sc, v.xn, v.v2, s);
    gpu::rotary(v.q, cos, sin, start, s);
    gpu::rotary(v.k, cos, sin, start, s);
    gpu::kv_append(v.k, v.v, L.k_cache, L.v_cache, start, s);
    if (fast_attention && v.q.dim(0) > 1)  // tensor cores; decode-sized chunks stay exact
      gpu::attention_prefill_fast(v.q, L.k_cache, L.v_cache, v.att, start, scale(), s);
    else
      gpu::attention_prefill(v.q, L.k_cache, L.v_cache, v.att, start, scale(), s);
    L.o->forward(sc, v.att2, v.proj, s);
    norm(v.x, &v.proj, L.ffn_norm, v.xn);
    L.gate->forward(sc, v.xn, v.gate, s);
    L.up->forward(sc, v.xn, v.up, s);
    gpu::swiglu(v.gate, v.up, v.gate, s);
    L.down->forward(sc, v.gate, v.proj, s);
    norm(v.x, &v.proj, next_norm(l), v.xn);
  }
}

void CudaLlama::Impl::prefill(std::span<const int32_t> tokens, Tensor* all) {
  const auto T = static_cast<int64_t>(tokens.size());
  const int64_t rows = std::min(T, chunk);
  const cudaStream_t s = stream;
  Activations act(dims, rows, *alloc, s);
  gpu::DeviceTensor chunk_logits;
  if (all) {
    chunk_logits = gpu::DeviceTensor(DType::F32, {rows, dims.vocab}, *alloc, s);
    if (rows > gpu::kExl2GemvMaxRows) ensure_dequant(head->dequant_elems());
  }
  int64_t pos = length;
  for (int64_t b = 0; b < T; b += rows) {
    const int64_t n = std::min(rows, T - b);
    const Views v(act, dims, n);
    const TensorView ids(const_cast<int32_t*>(tokens.data() + b), DType::I32, {n});
    gpu::copy_to_device(ids, v.ids, s);
    layers_prefill(v, static_cast<int>(pos));
    const LinearScratch sc = scratch(v.mm_ws);
    if (all) {
      const gpu::DeviceView out = chunk_logits.view().slice0(0, n);
      head->forward(sc, v.xn, out, s);
      gpu::copy_to_host(out, all->view().slice0(b, b + n), s);
    } else if (b + n == T) {
      head->forward(sc, v.xn.slice0(n - 1, n), logits.view(), s);
    }
    pos += n;
  }
  if (all) CUDA_CHECK(cudaStreamSynchronize(s));
  set_position(pos);
}

// Rotary, KV append and attention of one token in one kernel (attention_decode.h).
template <typename C>
void CudaLlama::Impl::attend(const LayerGpu& L, const Views& v) {
  const gpu::DecodeAttention<C> a{
      .q = v.q.data<float>(), .k_new = v.k.data<float>(), .v_new = v.v.data<float>(),
      .cos = cos.view().data<float>(), .sin = sin.view().data<float>(),
      .k_cache = static_cast<C*>(L.k_cache.raw()), .v_cache = static_cast<C*>(L.v_cache.raw()),
      .out = v.att.data<float>(), .workspace = attn_ws.view().data<float>(),
      .heads = static_cast<int>(dims.heads), .kv_heads = static_cast<int>(dims.kv_heads),
      .head_dim = static_cast<int>(dims.head_dim), .capacity = static_cast<int>(capacity),
      .position_ptr = pos_ptr(), .max_keys = static_cast<int>(capacity), .scale = scale(), .pdl = pdl};
  gpu::attention_decode_cuda(a, stream);
}

// Per layer: q, k, v GEMVs (one group launch for EXL2); attention (+ rotary, append); o GEMV;
// add + norm; gate, up GEMVs (one group launch); SwiGLU and down GEMV (one launch for EXL2);
// add + norm (of the next layer, or the final one, which also advances the
// position). Embedding and the first norm are one kernel.
void CudaLlama::Impl::decode_body() {
  const cudaStream_t s = stream;
  const Views v(*dec, dims, 1);
  const LinearScratch sc = scratch(v.mm_ws);
  const int hidden = static_cast<int>(dims.hidden), vocab = static_cast<int>(dims.vocab);
  const auto eps = static_cast<float>(config.rms_norm_eps);
  const int32_t* id = slot.view().data<int32_t>();
  const float* w0 = layers[0].attn_norm.view().data<float>();
  // The first kernel waits for everything before it (no programmatic launch): the attention
  // kernels read the position and old cache rows before their pdl_wait, so the previous step
  // (the last norm advances the position) must be complete, whatever the kernels between
  // release their dependents early.
  constexpr bool kFirstPdl = false;
  // EXQ_DECODE_SKIP=op,op: leaves those op groups out of the step (timing only: the cost of a
  // group inside the chain is the step's time with and without it; the tokens are wrong).
  static const std::string skip = [] {
    std::string list;
    if (const char* e = std::getenv("EXQ_DECODE_SKIP")) list.append(",").append(e).append(",");
    return list;
  }();
  auto on = [&](const char* op) {
    std::string key(",");
    key.append(op).append(",");
    if (skip.find(key) != std::string::npos) return false;
    mark(op);
    return true;
  };
  mark("embed+norm");
  auto embed_norm = [&](const auto* table) {
    decode_embed_rmsnorm_cuda(id, table, vocab, v.x.data<float>(), w0, v.xn.data<float>(), hidden,
                              eps, kFirstPdl, s);
  };
  if (embed.dtype() == DType::F16)
    embed_norm(static_cast<const __half*>(embed.raw()));
  else if (embed.dtype() == DType::BF16)
    embed_norm(static_cast<const __nv_bfloat16*>(embed.raw()));
  else
    embed_norm(embed.view().data<float>());
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerGpu& L = layers[l];
    if (on("qkv")) {
      if (!L.qkv.empty()) {
        gpu::exl2_gemv_group(L.qkv, v.xn, {v.q2, v.k2, v.v2}, exl2_ws, s);
      } else {
        L.q->forward(sc, v.xn, v.q2, s);
        L.k->forward(sc, v.xn, v.k2, s);
        L.v->forward(sc, v.xn, v.v2, s);
      }
    }
    if (on("attention")) {
      if (opts.kv_cache == DType::F16)
        attend<__half>(L, v);
      else
        attend<float>(L, v);
    }
    if (on("o")) L.o->forward(sc, v.att2, v.proj, s);
    if (on("norm"))
      decode_add_rmsnorm_cuda(v.x.data<float>(), v.proj.data<float>(),
                              L.ffn_norm.view().data<float>(), v.xn.data<float>(), hidden, eps,
                              nullptr, pdl, s);
    if (on("gate+up")) {
      if (!L.gate_up.empty()) {
        gpu::exl2_gemv_group(L.gate_up, v.xn, {v.gate, v.up}, exl2_ws, s);
      } else {
        L.gate->forward(sc, v.xn, v.gate, s);
        L.up->forward(sc, v.xn, v.up, s);
      }
    }
    if (on("swiglu+down") && !L.down->forward_swiglu(sc, v.gate, v.up, v.proj, s)) {
      decode_swiglu_cuda(v.gate.data<float>(), v.up.data<float>(), v.gate.data<float>(),
                         static_cast<int>(dims.inter), pdl, s);
      L.down->forward(sc, v.gate, v.proj, s);
    }
    const bool last = l + 1 == layers.size();
    if (on("norm") || last)  // the last norm also advances the position
      decode_add_rmsnorm_cuda(v.x.data<float>(), v.proj.data<float>(),
                              next_norm(l).view().data<float>(), v.xn.data<float>(), hidden, eps,
                              last ? pos_ptr() : nullptr, pdl, s);
  }
  if (on("head")) head->forward(sc, v.xn, logits.view(), s);
  mark(nullptr);
}

void CudaLlama::Impl::capture() {
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    decode_body();
  } catch (...) {
    cudaStreamEndCapture(stream, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    throw;
  }
  const cudaError_t end = cudaStreamEndCapture(stream, &g);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = end == cudaSuccess ? cudaGraphInstantiate(&exec, g, 0) : end;
  if (g) cudaGraphDestroy(g);
  if (inst != cudaSuccess) {
    cudaGetLastError();
    throw Error(fmt::format("capturing the decode step into a CUDA graph failed: {} ({})",
                            cudaGetErrorName(inst), cudaGetErrorString(inst)));
  }
  graph = exec;
}

void CudaLlama::Impl::sync_position() {
  if (!pos_dirty) return;
  host_pos = static_cast<int32_t>(length);
  // Pageable source: staged before the call returns, so host_pos may change afterwards.
  CUDA_CHECK(cudaMemcpyAsync(pos_ptr(), &host_pos, sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  pos_dirty = false;
}

gpu::DeviceView CudaLlama::Impl::decode() {
  EXQ_CHECK(length < capacity, "decode: the cache of {} positions is full", capacity);
  const cudaStream_t s = stream;
  sync_position();
  if (graph) {
    CUDA_CHECK(cudaGraphLaunch(graph, s));
    ++replays;
  } else {
    decode_body();
    if (opts.cuda_graph) capture();  // the first step runs eagerly, the next ones replay
  }
  ++length;
  return logits.view();
}

// ---- CudaLlama ----------------------------------------------------------------------------

CudaLlama::CudaLlama(const model::LlamaModel& model, const CudaOptions& options)
    : CudaLlama(model.config(), model.weights(), options) {}

CudaLlama::CudaLlama(const io::ModelConfig& config, const model::LlamaWeights& weights,
                     const CudaOptions& options)
    : impl_(std::make_unique<Impl>(config, weights, options)) {}

CudaLlama::~CudaLlama() = default;
CudaLlama::CudaLlama(CudaLlama&&) noexcept = default;
CudaLlama& CudaLlama::operator=(CudaLlama&&) noexcept = default;

const io::ModelConfig& CudaLlama::config() const { return impl_->config; }
const gpu::DeviceInfo& CudaLlama::device() const { return impl_->info; }
int64_t CudaLlama::position() const { return impl_->length; }
int64_t CudaLlama::max_context() const { return impl_->capacity; }
void CudaLlama::reset() { impl_->set_position(0); }

void CudaLlama::truncate(int64_t n) {
  EXQ_CHECK(n >= 0 && n <= impl_->length, "truncate: {} is outside [0, {}]", n, impl_->length);
  impl_->set_position(n);
}

Tensor CudaLlama::forward(std::span<const int32_t> tokens, bool all_logits) {
  Impl& m = *impl_;
  m.check_tokens(tokens);
  if (!all_logits || tokens.size() == 1) return gpu::to_host(forward_last(tokens), m.stream);
  Tensor out(DType::F32, {static_cast<int64_t>(tokens.size()), m.dims.vocab});
  m.prefill(tokens, &out);
  return out;
}

gpu::DeviceView CudaLlama::forward_last(std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  m.check_tokens(tokens);
  if (tokens.size() > 1) {
    m.prefill(tokens, nullptr);
    return m.logits.view();
  }
  CUDA_CHECK(cudaMemcpyAsync(m.slot.raw(), tokens.data(), sizeof(int32_t), cudaMemcpyHostToDevice,
                             m.stream));
  return m.decode();
}

gpu::DeviceView CudaLlama::decode_slot() { return impl_->decode(); }

std::vector<CudaLlama::OpTime> CudaLlama::profile_decode_step() {
  Impl& m = *impl_;
  EXQ_CHECK(m.length < m.capacity, "decode: the cache of {} positions is full", m.capacity);
  m.sync_position();
  m.marks.clear();
  m.profiling = true;
  try {
    m.decode_body();
  } catch (...) {
    m.profiling = false;
    throw;
  }
  m.profiling = false;
  ++m.length;
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
  std::vector<OpTime> out;
  for (size_t i = 0; i + 1 < m.marks.size(); ++i) {
    const double ms = gpu::Event::elapsed_ms(m.events[i], m.events[i + 1]);
    auto it = std::find_if(out.begin(), out.end(), [&](const OpTime& t) { return t.op == m.marks[i]; });
    if (it == out.end()) {
      out.push_back({m.marks[i], 0.0, 0});
      it = out.end() - 1;
    }
    it->ms += ms;
    ++it->count;
  }
  return out;
}
gpu::DeviceView CudaLlama::token_slot() const { return impl_->slot.view().slice0(0, 1); }
cudaStream_t CudaLlama::stream() const { return impl_->stream; }
gpu::CachingAllocator& CudaLlama::allocator() { return *impl_->alloc; }

CudaLlama::Stats CudaLlama::stats() const {
  const Impl& m = *impl_;
  Stats st;
  st.weight_bytes = m.weight_bytes;
  st.kv_bytes_per_token = static_cast<size_t>(m.config.num_hidden_layers) * 2 *
                          static_cast<size_t>(m.dims.kv_heads * m.dims.head_dim) *
                          dtype_size(m.opts.kv_cache);
  st.graph_captured = m.graph != nullptr;
  st.graph_replays = m.replays;
  return st;
}

}  // namespace exq::runtime::cuda
