#include "runtime/cuda/cuda_llama.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
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
#include "backend/cuda/norm.h"
#include "backend/cuda/rotary.h"
#include "backend/cuda/stream.h"
#include "model/kv_quant.h"
#include "model/rope.h"
#include "runtime/cuda/cuda_llama_impl.h"
#include "runtime/cuda/cuda_weights.h"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {

namespace {

constexpr size_t kCublasWorkspace = size_t{32} << 20;  // cuBLAS's advice for Hopper
constexpr size_t kDeviceReserve = size_t{512} << 20;   // context, cuBLAS, driver
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double gib(size_t bytes) { return static_cast<double>(bytes) / kGiB; }

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

CudaLlama::Impl::Impl(const io::ModelConfig& c, const model::LlamaWeights& w, const CudaOptions& o)
    : config(c), dims(c), opts(o), info(gpu::require_device(o.device)) {
  const Dims& d = dims;
  EXQ_CHECK(d.head_dim % 2 == 0 && gpu::attention_supports(DType::F32, d.head_dim),
            "cuda: head_dim {} is not supported (even, at most {})", d.head_dim,
            gpu::kAttentionMaxHeadDim);
  EXQ_CHECK(d.kv_heads > 0 && d.heads % d.kv_heads == 0,
            "cuda: {} attention heads are not a multiple of {} kv heads", d.heads, d.kv_heads);
  EXQ_CHECK(o.kv_cache == DType::F16 || o.kv_cache == DType::F32 || o.kv_cache == DType::I8 ||
                o.kv_cache == DType::U8,
            "cuda: the KV cache must be F16, F32, I8 (q8_0) or U8 (q4), got {}", dtype_name(o.kv_cache));
  const bool quant = o.kv_cache == DType::I8 || o.kv_cache == DType::U8;
  const char* quant_name = o.kv_cache == DType::U8 ? "q4" : "q8_0";
  EXQ_CHECK(!quant || gpu::attention_decode_q8_supports(static_cast<int>(d.heads), static_cast<int>(d.kv_heads),
                                                        static_cast<int>(d.head_dim)),
            "cuda: the {} KV cache needs head_dim 64, 96, 128 or 256 (256: a GPU with 155 KB of shared memory a "
            "block, sm_80 / sm_90) and at most 16 attention heads per kv head; this model has head_dim {} and "
            "{} / {} heads (use the f16 cache)",
            quant_name, d.head_dim, d.heads, d.kv_heads);
  EXQ_CHECK(o.prefill_chunk >= 1, "cuda: prefill chunk must be >= 1, got {}", o.prefill_chunk);
  EXQ_CHECK(static_cast<int64_t>(w.layers.size()) == c.num_hidden_layers,
            "cuda: model has {} layers, config says {}", w.layers.size(), c.num_hidden_layers);
  capacity = o.max_context > 0 ? o.max_context : std::min<int64_t>(c.context_length(), 4096);
  EXQ_CHECK(capacity >= 1 && capacity <= INT_MAX / 2, "cuda: context of {} positions is not supported",
            capacity);
  chunk = std::min(o.prefill_chunk, capacity);
  EXQ_CHECK(o.sequences >= 1 && o.sequences <= 256, "cuda: {} sequences; 1 to 256 are supported", o.sequences);
  seqs = o.sequences;
  lengths.assign(static_cast<size_t>(seqs), 0);

  // Everything must fit before anything is uploaded: a clear error instead of a failed cudaMalloc.
  size_t dense = rounded(static_cast<size_t>(w.embed.numel()) * dtype_size(w.embed.dtype())) +
                 (c.sandwich_norms ? 4 : 2) * rounded(static_cast<size_t>(d.hidden) * 4) *
                     (static_cast<size_t>(c.num_hidden_layers) + 1);
  auto add = [&](const model::Linear& lin, bool bias) {
    (dynamic_cast<const model::DenseLinear*>(&lin) ? dense : exl2_bytes) += gpu_linear_bytes(lin, bias);
  };
  int64_t max_exl2 = 0;
  EXQ_CHECK(o.cpu_moe_layers >= 0, "cuda: cpu_moe_layers must be >= 0, got {}", o.cpu_moe_layers);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const model::LayerWeights& L = w.layers[l];
    const std::pair<const model::Linear*, int> lin[] = {{L.q.get(), 0},    {L.k.get(), 0},  {L.v.get(), 0},
                                                        {L.o.get(), 1},    {L.gate.get(), 2}, {L.up.get(), 2},
                                                        {L.down.get(), 2}};
    if (!L.experts.empty() && static_cast<int64_t>(l) >= o.cpu_moe_layers)
      moe_layer_bytes(L, dense, exl2_bytes, max_exl2);
    for (const auto& [p, which] : lin) {
      if (p == nullptr) continue;  // a MoE layer's MLP (above)
      add(*p, has_bias(c, which));
      if (!dynamic_cast<const model::DenseLinear*>(p)) max_exl2 = std::max(max_exl2, p->in_features() * p->out_features());
    }
  }
  const bool share_head = w.head_tied && (w.embed.dtype() == DType::F16 || w.embed.dtype() == DType::BF16);
  if (!share_head) add(*w.head, false);
  const auto cache_elems = static_cast<size_t>(seqs * d.kv_heads * capacity * d.head_dim);
  const bool q4 = o.kv_cache == DType::U8;  // two codes a byte
  size_t kv = static_cast<size_t>(c.num_hidden_layers) * 2 *
              rounded(q4 ? cache_elems / 2 : cache_elems * dtype_size(o.kv_cache));
  if (o.kv_cache == DType::I8 || q4)  // the scales (q4: and minimums)
    kv += static_cast<size_t>(c.num_hidden_layers) * 2 * rounded(cache_elems / 32 * (q4 ? 4 : 2));
  const size_t scratch = Activations::bytes(d, chunk) + rounded(static_cast<size_t>(chunk * d.vocab) * 4) +
                         Activations::bytes(d, 1) + rounded(static_cast<size_t>(d.vocab) * 4) +
                         rounded(static_cast<size_t>(max_exl2) * 2) + kCublasWorkspace +
                         2 * rounded(static_cast<size_t>(capacity * d.head_dim / 2) * 4) +
                         (c.num_experts > 0 ? MoeStepBuffers::bytes(c) + MoeRowBuffers::bytes(c, chunk) : 0);
  const size_t need = dense + exl2_bytes + kv + scratch;
  const size_t free_bytes = info.free_memory > kDeviceReserve ? info.free_memory - kDeviceReserve : 0;
  const size_t available = std::min(o.vram_budget, free_bytes);
  if (need > available)
    throw Error(fmt::format(
        "the model does not fit on cuda:{} ({}): it needs about {:.2f} GiB (weights {:.2f}, KV cache "
        "{:.2f} for {} positions{}, scratch {:.2f}) but {:.2f} GiB are available ({}); lower the "
        "context{} or use the CPU",
        o.device, info.name, gib(need), gib(dense + exl2_bytes), gib(kv), capacity,
        seqs > 1 ? fmt::format(" x {} sequences", seqs) : std::string(), gib(scratch),
        gib(available),
        o.vram_budget < free_bytes ? fmt::format("budget {:.2f} GiB", gib(o.vram_budget))
                                   : fmt::format("{:.2f} GiB free", gib(info.free_memory)),
        c.num_experts > 0 && o.cpu_moe_layers < c.num_hidden_layers
            ? ", keep experts in host memory (--cpu-moe, --n-cpu-moe N)"
            : ""));
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
    // A window as long as the cache changes nothing: the kernels' plain paths.
    const int64_t window = config.window_of(static_cast<int64_t>(l));
    G.window = window < capacity ? static_cast<int>(window) : 0;
    G.local_rope = config.local_rope(static_cast<int64_t>(l));
    G.attn_norm = upload_f32(L.attn_norm);
    G.ffn_norm = upload_f32(L.ffn_norm);
    if (!L.post_attn_norm.empty()) {
      G.post_attn_norm = upload_f32(L.post_attn_norm);
      G.post_ffn_norm = upload_f32(L.post_ffn_norm);
    }
    if (config.qk_norm) {
      G.q_norm = upload_f32(L.q_norm);
      G.k_norm = upload_f32(L.k_norm);
    }
    G.q = lin(*L.q, 0, "self_attn.q_proj");
    G.k = lin(*L.k, 0, "self_attn.k_proj");
    G.v = lin(*L.v, 0, "self_attn.v_proj");
    G.o = lin(*L.o, 1, "self_attn.o_proj");
    if (config.moe_layer(static_cast<int64_t>(l))) {
      G.moe = std::make_unique<MoeLayerGpu>(config, L, static_cast<int64_t>(l), a, s,
                                            static_cast<int64_t>(l) < opts.cpu_moe_layers);
      max_exl2 = std::max(max_exl2, G.moe->dequant_elems());
      moe_any = true;
      if (G.moe->device_routed()) ++moe_device_layers;
      else moe_host_decode = true;
    } else {
      EXQ_CHECK(L.gate && L.up && L.down, "cuda: model.layers.{}: a dense MLP without gate / up / down", l);
      G.gate = lin(*L.gate, 2, "mlp.gate_proj");
      G.up = lin(*L.up, 2, "mlp.up_proj");
      G.down = lin(*L.down, 2, "mlp.down_proj");
    }
    const Shape cache = {seqs * d.kv_heads, capacity, q4() ? d.head_dim / 2 : d.head_dim};  // q4: two codes a byte
    G.k_cache = gpu::DeviceTensor(opts.kv_cache, cache, a, s);
    G.v_cache = gpu::DeviceTensor(opts.kv_cache, cache, a, s);
    CUDA_CHECK(cudaMemsetAsync(G.k_cache.raw(), 0, G.k_cache.nbytes(), s));
    CUDA_CHECK(cudaMemsetAsync(G.v_cache.raw(), 0, G.v_cache.nbytes(), s));
    if (q8() || q4()) {  // q4: (step, minimum) pairs
      const Shape scales = {seqs * d.kv_heads, capacity, d.head_dim / 32 * (q4() ? 2 : 1)};
      G.k_scale = gpu::DeviceTensor(DType::F16, scales, a, s);
      G.v_scale = gpu::DeviceTensor(DType::F16, scales, a, s);
      CUDA_CHECK(cudaMemsetAsync(G.k_scale.raw(), 0, G.k_scale.nbytes(), s));
      CUDA_CHECK(cudaMemsetAsync(G.v_scale.raw(), 0, G.v_scale.nbytes(), s));
    }
    for (const GpuLinear* g : {G.q.get(), G.k.get(), G.v.get(), G.o.get(), G.gate.get(), G.up.get(), G.down.get()})
      if (g) weight_bytes += g->weight_bytes();
    if (G.moe) weight_bytes += G.moe->step_bytes();
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

  const cpu::RopeTable rope = model::rope_table(config, capacity);
  cos = upload_f32(rope.cos);
  sin = upload_f32(rope.sin);
  if (config.rope_local_theta > 0.0) {
    const cpu::RopeTable local = model::rope_table(model::local_rope_config(config), capacity);
    cos_local = upload_f32(local.cos);
    sin_local = upload_f32(local.sin);
  }
  ensure_dequant(max_exl2);

  pdl = gpu::decode_pdl_enabled();
  graphs.assign(static_cast<size_t>(seqs), nullptr);
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
    L.qkv = GpuLinearGroup({L.q.get(), L.k.get(), L.v.get()});
    L.o->reserve(exl2_ws, s);
    L.qkv.reserve(exl2_ws, s);
    if (L.moe) {
      L.moe->reserve(exl2_ws, s);
      continue;
    }
    L.gate_up = GpuLinearGroup({L.gate.get(), L.up.get()});
    L.down->reserve(exl2_ws, s);
    L.gate_up.reserve(exl2_ws, s);
  }
  if (moe_device_layers > 0) moe_step = std::make_unique<MoeStepBuffers>(config, a, s);
  head->reserve(exl2_ws, s);
  CUDA_CHECK(cudaStreamSynchronize(s));
}

CudaLlama::Impl::~Impl() {
  cudaStreamSynchronize(stream);  // kernels may still read buffers; errors are moot here
  for (const auto* list : {&graphs, &pass_graphs, &batch_graphs})
    for (cudaGraphExec_t g : *list)
      if (g) cudaGraphExecDestroy(g);
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

void CudaLlama::Impl::qk_norm(const LayerGpu& L, const gpu::DeviceView& q, const gpu::DeviceView& k) const {
  if (L.q_norm.empty()) return;
  const auto eps = static_cast<float>(config.rms_norm_eps);
  const gpu::DeviceView qh = q.reshape({q.dim(0) * dims.heads, dims.head_dim});
  const gpu::DeviceView kh = k.reshape({k.dim(0) * dims.kv_heads, dims.head_dim});
  gpu::rmsnorm(qh, L.q_norm.view(), qh, eps, stream);
  gpu::rmsnorm(kh, L.k_norm.view(), kh, eps, stream);
}

void CudaLlama::Impl::layers_prefill(const Views& v, gpu::StartPos start, bool grouped, int batch_rows) {
  const cudaStream_t s = stream;
  const LinearScratch sc = scratch(v.mm_ws);
  const bool fast_attention =
      !gpu::attention_prefill_generic_forced() && gpu::attention_prefill_fast_supports(opts.kv_cache, dims.head_dim);
  const auto softcap = static_cast<float>(config.attn_softcap);  // gemma2
  gpu::embedding(v.ids, embed, v.x, s);
  if (const float es = model::embedding_scale(config, embed.dtype()); es != 1.0f)  // gemma, granite
    scale_f32_cuda(v.x.data<float>(), v.x.numel(), es, s);
  norm(v.x, nullptr, layers[0].attn_norm, v.xn);
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerGpu& L = layers[l];
    if (grouped)
      L.qkv.forward(sc, v.xn, {v.q2, v.k2, v.v2}, s);
    else
      L.qkv.forward_each(sc, v.xn, {v.q2, v.k2, v.v2}, s);
    if (batch_rows > 0) {  // q / k norms, rotary and append inside the decode attention
      if (q8())
        attend_rows<int8_t>(L, v, batch_rows);
      else if (q4())
        attend_rows<uint8_t>(L, v, batch_rows);
      else if (opts.kv_cache == DType::F16)
        attend_rows<__half>(L, v, batch_rows);
      else
        attend_rows<float>(L, v, batch_rows);
    } else {
      const gpu::DeviceView kc = kcache(L), vc = vcache(L);
      qk_norm(L, v.q, v.k);
      gpu::rotary(v.q, cos_of(L), sin_of(L), start, s);
      gpu::rotary(v.k, cos_of(L), sin_of(L), start, s);
      if (q8()) {  // appended as codes, attended as they read back (tensor cores, any length)
        const gpu::DeviceView ksc = seq_view(L.k_scale), vsc = seq_view(L.v_scale);
        gpu::kv_append_q8(v.k, v.v, kc, ksc, vc, vsc, start, s);
        gpu::attention_prefill_q8(v.q, kc, ksc, vc, vsc, v.att, start, scale(), s, L.window, softcap);
      } else if (q4()) {  // the same, rotated (kv_q4.cuh)
        const gpu::DeviceView ksc = seq_view(L.k_scale), vsc = seq_view(L.v_scale);
        gpu::kv_append_q4(v.k, v.v, kc, ksc, vc, vsc, start, s);
        gpu::attention_prefill_q4(v.q, kc, ksc, vc, vsc, v.att, start, scale(), s, L.window, softcap);
      } else {
        gpu::kv_append(v.k, v.v, kc, vc, start, s);
        if (fast_attention && v.q.dim(0) > 1)  // tensor cores; decode-sized chunks stay exact
          gpu::attention_prefill_fast(v.q, kc, vc, v.att, start, scale(), s, L.window, softcap);
        else
          gpu::attention_prefill(v.q, kc, vc, v.att, start, scale(), s, L.window, softcap);
      }
    }
    L.o->forward(sc, v.att2, v.proj, s);
    norm(v.x, &v.proj, L.ffn_norm, v.xn, &L.post_attn_norm);
    if (L.moe) {
      moe_mlp_rows(L, v.xn, v.proj, v.mm_ws);
      norm(v.x, &v.proj, next_norm(l), v.xn, &L.post_ffn_norm);
      continue;
    }
    if (grouped)
      L.gate_up.forward(sc, v.xn, {v.gate, v.up}, s);
    else
      L.gate_up.forward_each(sc, v.xn, {v.gate, v.up}, s);
    if (!L.down->forward_swiglu(sc, v.gate, v.up, v.proj, s, gelu())) {
      gpu::swiglu(v.gate, v.up, v.gate, s, gelu());
      L.down->forward(sc, v.gate, v.proj, s);
    }
    norm(v.x, &v.proj, next_norm(l), v.xn, &L.post_ffn_norm);
  }
}

void CudaLlama::Impl::moe_mlp_rows(const LayerGpu& L, const gpu::DeviceView& xn, const gpu::DeviceView& out,
                                   const gpu::DeviceView& mm_ws) {
  moe_rows.ensure(config, std::max<int64_t>(xn.dim(0), 1), *alloc, stream);
  if (L.moe->grouped_rows()) moe_rows.ensure_slots(config, std::max<int64_t>(xn.dim(0), 1), *alloc, stream);
  L.moe->rows(moe_rows, scratch(mm_ws), xn, out, stream);
}

void CudaLlama::Impl::head_logits(const LinearScratch& sc, const gpu::DeviceView& xn, const gpu::DeviceView& out) {
  head->forward(sc, xn, out, stream);
  if (config.final_softcap > 0.0)
    softcap_f32_cuda(out.data<float>(), out.numel(), static_cast<float>(config.final_softcap), stream);
  if (config.logits_scaling != 1.0)  // granite: the logits divided by it
    scale_f32_cuda(out.data<float>(), out.numel(), static_cast<float>(1.0 / config.logits_scaling), stream);
}

void CudaLlama::Impl::prefill(std::span<const int32_t> tokens, const RowsFn* all, bool keep_rows,
                              const RowsFn* hidden) {
  const auto T = static_cast<int64_t>(tokens.size());
  const int64_t rows = std::min(T, chunk);
  if (keep_rows && rows > gpu::kExl2GemvMaxRows) ensure_dequant(head->dequant_elems());
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
    if (hidden) {
      (*hidden)(v.xn, b);
    } else if (all) {
      const gpu::DeviceView out = chunk_logits.view().slice0(0, n);
      head_logits(sc, v.xn, out);
      (*all)(out, b);
    } else if (keep_rows) {
      head_logits(sc, v.xn, rows_logits.view().slice0(b, b + n));
    } else if (b + n == T) {
      head_logits(sc, v.xn.slice0(n - 1, n), logits.view());
    }
    pos += n;
  }
  if (all || hidden) CUDA_CHECK(cudaStreamSynchronize(s));
  set_position(pos);
}

// ---- CudaLlama ----------------------------------------------------------------------------

namespace {

// Copies each chunk of rows [n, width] to rows first.. of `out` (host) in stream order.
CudaLlama::RowsFn rows_to_host(Tensor& out, cudaStream_t stream) {
  return [&out, stream](const gpu::DeviceView& rows, int64_t first) {
    gpu::copy_to_host(rows, out.view().slice0(first, first + rows.dim(0)), stream);
  };
}

CudaOptions with_model_cache(const model::LlamaModel& model, CudaOptions o) {
  if (model.kv_quant() == model::KvQuant::kQ8) o.kv_cache = DType::I8;
  if (model.kv_quant() == model::KvQuant::kQ4) o.kv_cache = DType::U8;
  o.cpu_moe_layers = std::max(o.cpu_moe_layers, model.cpu_moe_layers());
  return o;
}

}  // namespace

CudaLlama::CudaLlama(const model::LlamaModel& model, const CudaOptions& options)
    : CudaLlama(model.config(), model.weights(), with_model_cache(model, options)) {}

CudaLlama::CudaLlama(const io::ModelConfig& config, const model::LlamaWeights& weights,
                     const CudaOptions& options)
    : impl_(std::make_unique<Impl>(config, weights, options)) {}

CudaLlama::~CudaLlama() = default;
CudaLlama::CudaLlama(CudaLlama&&) noexcept = default;
CudaLlama& CudaLlama::operator=(CudaLlama&&) noexcept = default;

const io::ModelConfig& CudaLlama::config() const { return impl_->config; }
const gpu::DeviceInfo& CudaLlama::device() const { return impl_->info; }
int64_t CudaLlama::position() const { return impl_->length; }
int CudaLlama::sequences() const { return impl_->seqs; }
int CudaLlama::selected_sequence() const { return impl_->cur; }
void CudaLlama::select_sequence(int s) { impl_->select(s); }
int64_t CudaLlama::position_of(int s) const {
  const Impl& m = *impl_;
  EXQ_CHECK(s >= 0 && s < m.seqs, "sequence {} is outside [0, {})", s, m.seqs);
  return s == m.cur ? m.length : m.lengths[static_cast<size_t>(s)];
}

void CudaLlama::Impl::select(int s) {
  EXQ_CHECK(s >= 0 && s < seqs, "sequence {} is outside [0, {})", s, seqs);
  if (s == cur) return;
  lengths[static_cast<size_t>(cur)] = length;
  cur = s;
  set_position(lengths[static_cast<size_t>(s)]);
}
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
  const RowsFn copy = rows_to_host(out, m.stream);
  m.prefill(tokens, &copy);
  return out;
}

Tensor CudaLlama::hidden_states(std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  m.check_tokens(tokens);
  Tensor out(DType::F32, {static_cast<int64_t>(tokens.size()), m.dims.hidden});
  const RowsFn copy = rows_to_host(out, m.stream);
  m.prefill(tokens, nullptr, false, &copy);
  return out;
}

void CudaLlama::forward_rows_to(std::span<const int32_t> tokens, const RowsFn& rows) {
  Impl& m = *impl_;
  m.check_tokens(tokens);
  m.prefill(tokens, &rows);
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

void CudaLlama::Impl::pass_body(int64_t rows) {
  const Views v(*pass, dims, rows);
  layers_prefill(v, gpu::StartPos(static_cast<int>(length), pass_pos.view().data<int32_t>()), /*grouped=*/true);
  head_logits(scratch(v.mm_ws), v.xn, rows_logits.view().slice0(0, rows));
}

// The tokens and the position go to device memory, then the count's graph runs (captured the
// first time): the launches of a pass cost the host one graph launch, as a decode step does.
void CudaLlama::Impl::ensure_pass() {
  if (pass) return;
  pass = std::make_unique<Activations>(dims, gpu::kExl2GemvMaxRows, *alloc, stream);
  pass_pos = gpu::DeviceTensor(DType::I32, {1}, *alloc, stream);
  pass_graphs.assign(static_cast<size_t>(seqs) * (gpu::kExl2GemvMaxRows + 1), nullptr);
}

void CudaLlama::Impl::run_pass(std::span<const int32_t> tokens) {
  const auto T = static_cast<int64_t>(tokens.size());
  ensure_pass();
  // Pageable sources: staged before each call returns.
  CUDA_CHECK(cudaMemcpyAsync(pass->ids.raw(), tokens.data(), tokens.size_bytes(), cudaMemcpyHostToDevice, stream));
  pass_host_pos = static_cast<int32_t>(length);
  CUDA_CHECK(cudaMemcpyAsync(pass_pos.raw(), &pass_host_pos, sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  cudaGraphExec_t& exec = pass_graphs[static_cast<size_t>(cur) * (gpu::kExl2GemvMaxRows + 1) + static_cast<size_t>(T)];
  if (!exec) exec = capture_graph(fmt::format("a {}-token pass", T), [this, T] { pass_body(T); });
  CUDA_CHECK(cudaGraphLaunch(exec, stream));
  set_position(length + T);
}

gpu::DeviceView CudaLlama::forward_rows(std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  m.check_tokens(tokens);
  const auto T = static_cast<int64_t>(tokens.size());
  EXQ_CHECK(T <= kMaxRowsOnDevice, "forward_rows: {} tokens, at most {}", T, kMaxRowsOnDevice);
  if (m.rows_logits.empty())
    m.rows_logits = gpu::DeviceTensor(DType::F32, {kMaxRowsOnDevice, m.dims.vocab}, *m.alloc, m.stream);
  if (m.opts.cuda_graph && !m.moe_any && T >= 2 && T <= gpu::kExl2GemvMaxRows)
    m.run_pass(tokens);
  else
    m.prefill(tokens, nullptr, /*keep_rows=*/true);
  return m.rows_logits.view().slice0(0, T);
}

gpu::DeviceView CudaLlama::decode_slot() { return impl_->decode(); }

gpu::DeviceView CudaLlama::token_slot() const { return impl_->slot.view().slice0(0, 1); }
cudaStream_t CudaLlama::stream() const { return impl_->stream; }
gpu::CachingAllocator& CudaLlama::allocator() { return *impl_->alloc; }

CudaLlama::Stats CudaLlama::stats() const {
  const Impl& m = *impl_;
  Stats st;
  st.weight_bytes = m.weight_bytes;
  // The layout kv_quant.h counts (its f16 figure twice for the f32 cache).
  const model::KvQuant quant = m.q8() ? model::KvQuant::kQ8 : m.q4() ? model::KvQuant::kQ4 : model::KvQuant::kNone;
  const int64_t bytes =
      model::kv_cache_bytes_per_token(m.config.num_hidden_layers, m.dims.kv_heads, m.dims.head_dim, quant);
  st.kv_bytes_per_token = static_cast<size_t>(m.opts.kv_cache == DType::F32 ? 2 * bytes : bytes);
  st.graph_captured = m.graphs[static_cast<size_t>(m.cur)] != nullptr;
  st.graph_replays = m.replays;
  st.o_staged_layers = m.o_staged_layers;
  st.moe_device_layers = m.moe_host_decode ? 0 : m.moe_device_layers;
  return st;
}

}  // namespace exq::runtime::cuda
