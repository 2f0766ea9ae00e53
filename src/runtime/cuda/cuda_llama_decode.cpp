// The single-token step of CudaLlama (cuda_llama_impl.h): its kernels, captured once into a
// CUDA graph and replayed, and the per-op profile of an eager step.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "runtime/cuda/cuda_llama_impl.h"

namespace exq::runtime::cuda {

// Rotary, KV append and attention of one token in one kernel (attention_decode.h). With the
// tensor-core kernel and an EXL2 o projection it also writes o's staged input (no staging
// launch; EXQ_DECODE_O_STAGE=launch keeps the launch, for timing).
template <typename C>
gpu::DecodeAttention<C> CudaLlama::Impl::decode_args(const LayerGpu& L, const Views& v) const {
  gpu::DecodeAttention<C> a{
      .q = v.q.data<float>(), .k_new = v.k.data<float>(), .v_new = v.v.data<float>(),
      .cos = cos_of(L).view().data<float>(), .sin = sin_of(L).view().data<float>(),
      .k_cache = static_cast<C*>(L.k_cache.raw()), .v_cache = static_cast<C*>(L.v_cache.raw()),
      .out = v.att.data<float>(), .workspace = attn_ws.view().data<float>(),
      .heads = static_cast<int>(dims.heads), .kv_heads = static_cast<int>(dims.kv_heads),
      .head_dim = static_cast<int>(dims.head_dim), .capacity = static_cast<int>(capacity),
      .max_keys = static_cast<int>(capacity), .scale = scale(),
      .rot_half = static_cast<int>(cos.view().dim(1)), .window = L.window,
      .softcap = static_cast<float>(config.attn_softcap), .pdl = pdl};
  if (!L.q_norm.empty()) {  // qwen3 / gemma3: normed by the attention kernel itself
    a.q_norm = L.q_norm.view().data<float>();
    a.k_norm = L.k_norm.view().data<float>();
    a.norm_eps = static_cast<float>(config.rms_norm_eps);
  }
  if constexpr (std::is_same_v<C, int8_t> || std::is_same_v<C, uint8_t>) {
    a.k_scale = static_cast<__half*>(L.k_scale.raw());
    a.v_scale = static_cast<__half*>(L.v_scale.raw());
  }
  return a;
}

template <typename C>
bool CudaLlama::Impl::attend(const LayerGpu& L, const Views& v) {
  gpu::DecodeAttention<C> a = decode_args<C>(L, v);
  // The selected sequence's caches (its first kv head).
  const int64_t first = static_cast<int64_t>(cur) * cache_elems();
  a.k_cache += first;
  a.v_cache += first;
  if (a.k_scale != nullptr) {
    a.k_scale += first / gpu::kv_cache_elems_per_scale<C>();
    a.v_scale += first / gpu::kv_cache_elems_per_scale<C>();
  }
  a.position_ptr = pos_ptr();
  bool staged = false;
  if constexpr (!std::is_same_v<C, float>) {  // the tensor-core kernel (q8, q4: always)
    static const bool launch = [] {
      const char* e = std::getenv("EXQ_DECODE_O_STAGE");
      return e != nullptr && std::string(e) == "launch";
    }();
    const gpu::Exl2Layer* o = L.o->exl2_layer();
    bool mma = true;
    if constexpr (std::is_same_v<C, __half>) mma = gpu::attention_decode_uses_mma(a);
    if (!launch && o != nullptr && mma) {
      const gpu::Exl2Scratch sc = exl2_ws.scratch(0);
      a.xq16 = reinterpret_cast<__half*>(sc.xq);
      a.x_pos = o->x_pos();
      a.x_pad = o->x_pad();
      a.x_pad_n = o->x_pad_count();
      a.xscale = sc.xscale;
      a.xscale_n = o->desc().num_steps * gpu::kExl2MaxBatch;
      staged = true;
    }
  }
  gpu::attention_decode_cuda(a, stream);
  return staged;
}

// Per layer: q, k, v GEMVs (one group launch for EXL2); attention (+ q / k norms, rotary, append); o GEMV;
// add + norm; gate, up GEMVs (one group launch); SwiGLU and down GEMV (one launch for EXL2) or the
// MoE MLP (router, routing, the chosen experts read from device memory: cuda_moe.h);
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
                              eps, kFirstPdl, s, model::embedding_scale(config, embed.dtype()));
  };
  if (embed.dtype() == DType::F16)
    embed_norm(static_cast<const __half*>(embed.raw()));
  else if (embed.dtype() == DType::BF16)
    embed_norm(static_cast<const __nv_bfloat16*>(embed.raw()));
  else
    embed_norm(embed.view().data<float>());
  o_staged_layers = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerGpu& L = layers[l];
    if (on("qkv")) L.qkv.forward(sc, v.xn, {v.q2, v.k2, v.v2}, s);
    bool o_staged = false;
    if (on("attention"))
      o_staged = q8()                         ? attend<int8_t>(L, v)
                 : q4()                        ? attend<uint8_t>(L, v)
                 : opts.kv_cache == DType::F16 ? attend<__half>(L, v)
                                               : attend<float>(L, v);
    if (on("o")) {
      o_staged_layers += o_staged ? 1 : 0;
      if (o_staged)
        L.o->forward_staged(sc, v.proj, s);
      else
        L.o->forward(sc, v.att2, v.proj, s);
    }
    if (on("norm"))
      decode_add_rmsnorm_cuda(v.x.data<float>(), v.proj.data<float>(),
                              L.ffn_norm.view().data<float>(), v.xn.data<float>(), hidden, eps,
                              nullptr, pdl, s, post_of(L.post_attn_norm), residual_scale());
    if (L.moe) {
      if (on("moe")) {
        if (moe_host_decode) moe_mlp_rows(L, v.xn, v.proj, v.mm_ws);
        else L.moe->decode(*moe_step, sc, v.xn, v.proj, s, [&](const char* op) { mark(op); });
      }
    } else {
      if (on("gate+up")) L.gate_up.forward(sc, v.xn, {v.gate, v.up}, s);
      if (on("swiglu+down") && !L.down->forward_swiglu(sc, v.gate, v.up, v.proj, s, gelu())) {
        decode_swiglu_cuda(v.gate.data<float>(), v.up.data<float>(), v.gate.data<float>(),
                           static_cast<int>(dims.inter), pdl, s, gelu());
        L.down->forward(sc, v.gate, v.proj, s);
      }
    }
    const bool last = l + 1 == layers.size();
    if (on("norm") || last)  // the last norm also advances the position
      decode_add_rmsnorm_cuda(v.x.data<float>(), v.proj.data<float>(),
                              next_norm(l).view().data<float>(), v.xn.data<float>(), hidden, eps,
                              last ? pos_ptr() : nullptr, pdl, s, post_of(L.post_ffn_norm), residual_scale());
  }
  if (on("head")) head_logits(sc, v.xn, logits.view());
  mark(nullptr);
}

cudaGraphExec_t CudaLlama::Impl::capture_graph(const std::string& what, const std::function<void()>& body) {
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  try {
    body();
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
    throw Error(fmt::format("capturing {} into a CUDA graph failed: {} ({})", what, cudaGetErrorName(inst),
                            cudaGetErrorString(inst)));
  }
  return exec;
}

void CudaLlama::Impl::capture() {
  graphs[static_cast<size_t>(cur)] = capture_graph("the decode step", [this] { decode_body(); });
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
  if (cudaGraphExec_t graph = graphs[static_cast<size_t>(cur)]) {
    CUDA_CHECK(cudaGraphLaunch(graph, s));
    ++replays;
  } else {
    decode_body();
    // The first step runs eagerly, the next ones replay (not when a MoE layer routes on the host).
    if (opts.cuda_graph && !moe_host_decode) capture();
  }
  ++length;
  return logits.view();
}

// decode_batch's attention: row r attends over the caches of sequence batch_io[16 + r] at
// position batch_io[8 + r] (rotary and append fused, as in the single-token step).
template <typename C>
void CudaLlama::Impl::attend_rows(const LayerGpu& L, const Views& v, int rows) {
  const int32_t* io = batch_io.view().data<int32_t>();
  gpu::DecodeAttention<C> a = decode_args<C>(L, v);
  a.workspace = batch_ws.view().data<float>();
  a.position_ptr = io + CudaLlama::kMaxBatchRows;
  a.rows = rows;
  a.cache_index = io + 2 * CudaLlama::kMaxBatchRows;
  a.cache_stride = cache_elems();
  gpu::attention_decode_cuda(a, stream);
}

// layers_prefill (cuda_llama.cpp) runs them.
template void CudaLlama::Impl::attend_rows<float>(const LayerGpu&, const Views&, int);
template void CudaLlama::Impl::attend_rows<__half>(const LayerGpu&, const Views&, int);
template void CudaLlama::Impl::attend_rows<int8_t>(const LayerGpu&, const Views&, int);
template void CudaLlama::Impl::attend_rows<uint8_t>(const LayerGpu&, const Views&, int);

void CudaLlama::Impl::batch_body(int rows) {
  const Views v(*pass, dims, rows);
  layers_prefill(v, gpu::StartPos(0), /*grouped=*/true, rows);
  head_logits(scratch(v.mm_ws), v.xn, batch_logits.view().slice0(0, rows));
}

void CudaLlama::Impl::launch_batch(int rows) {
  if (!opts.cuda_graph || moe_any) {  // MoE layers read the routing of several rows on the host
    batch_body(rows);
    return;
  }
  cudaGraphExec_t& exec = batch_graphs[static_cast<size_t>(rows)];
  if (!exec) exec = capture_graph(fmt::format("a {}-sequence decode step", rows), [this, rows] { batch_body(rows); });
  CUDA_CHECK(cudaGraphLaunch(exec, stream));
}

gpu::DeviceView CudaLlama::decode_batch(std::span<const int> seqs, std::span<const int32_t> tokens) {
  Impl& m = *impl_;
  const auto rows = static_cast<int>(seqs.size());
  EXQ_CHECK(rows >= 1 && rows <= kMaxBatchRows && tokens.size() == seqs.size(),
            "decode_batch: {} sequences and {} tokens; 1 to {} of each, as many tokens as sequences", seqs.size(),
            tokens.size(), kMaxBatchRows);
  static_assert(kMaxBatchRows <= gpu::kExl2GemvMaxRows);
  m.lengths[static_cast<size_t>(m.cur)] = m.length;
  for (int r = 0; r < rows; ++r) {
    const int s = seqs[static_cast<size_t>(r)];
    EXQ_CHECK(s >= 0 && s < m.seqs, "decode_batch: sequence {} is outside [0, {})", s, m.seqs);
    for (int q = 0; q < r; ++q)
      EXQ_CHECK(seqs[static_cast<size_t>(q)] != s, "decode_batch: sequence {} appears twice", s);
    const int32_t id = tokens[static_cast<size_t>(r)];
    EXQ_CHECK(id >= 0 && id < m.dims.vocab, "decode_batch: token id {} is outside the vocabulary ({} tokens)", id,
              m.dims.vocab);
    EXQ_CHECK(m.lengths[static_cast<size_t>(s)] < m.capacity,
              "decode_batch: the cache of sequence {} ({} positions) is full", s, m.capacity);
  }
  const cudaStream_t st = m.stream;
  if (m.batch_io.empty()) {
    m.ensure_pass();
    m.batch_io = gpu::DeviceTensor(DType::I32, {3 * kMaxBatchRows}, *m.alloc, st);
    const int64_t row_floats =
        gpu::attention_decode_row_floats(static_cast<int>(m.dims.heads), static_cast<int>(m.dims.head_dim));
    m.batch_ws = gpu::DeviceTensor(DType::F32, {kMaxBatchRows * row_floats}, *m.alloc, st);
    for (int r = 0; r < kMaxBatchRows; ++r)
      gpu::attention_decode_reset_cuda(m.batch_ws.view().data<float>() + r * row_floats,
                                       static_cast<int>(m.dims.heads), static_cast<int>(m.dims.head_dim), st);
    m.batch_logits = gpu::DeviceTensor(DType::F32, {kMaxBatchRows, m.dims.vocab}, *m.alloc, st);
    m.batch_graphs.assign(kMaxBatchRows + 1, nullptr);
    m.batch_host.assign(3 * kMaxBatchRows, 0);
  }
  for (int r = 0; r < rows; ++r) {
    const int s = seqs[static_cast<size_t>(r)];
    m.batch_host[static_cast<size_t>(r)] = tokens[static_cast<size_t>(r)];
    m.batch_host[static_cast<size_t>(kMaxBatchRows + r)] = static_cast<int32_t>(m.lengths[static_cast<size_t>(s)]);
    m.batch_host[static_cast<size_t>(2 * kMaxBatchRows + r)] = s;
  }
  // Pageable source: staged before the call returns. The ids go where the pass reads them.
  CUDA_CHECK(cudaMemcpyAsync(m.batch_io.raw(), m.batch_host.data(), m.batch_host.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, st));
  CUDA_CHECK(cudaMemcpyAsync(m.pass->ids.raw(), m.batch_io.raw(), static_cast<size_t>(rows) * sizeof(int32_t),
                             cudaMemcpyDeviceToDevice, st));
  m.launch_batch(rows);
  for (int r = 0; r < rows; ++r) ++m.lengths[static_cast<size_t>(seqs[static_cast<size_t>(r)])];
  m.set_position(m.lengths[static_cast<size_t>(m.cur)]);
  return m.batch_logits.view().slice0(0, rows);
}

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
}  // namespace exq::runtime::cuda
