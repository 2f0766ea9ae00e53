#include "runtime/cuda/cuda_moe.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elementwise.h"
#include "backend/cuda/expert_gemm.h"
#include "core/error.h"
#include "model/moe.h"
#include "runtime/cuda/moe_launchers.h"

namespace exq::runtime::cuda {
namespace {

namespace gpu = exq::cuda;

size_t rounded(size_t bytes) { return gpu::CachingAllocator::round_size(bytes); }

gpu::DeviceTensor raw_bytes(size_t n, gpu::CachingAllocator& a, cudaStream_t s) {
  return gpu::DeviceTensor(DType::U8, {static_cast<int64_t>(n)}, a, s);
}

// The first n rows of a flat F32 buffer as [n, cols].
gpu::DeviceView rows_of(const gpu::DeviceTensor& t, int64_t n, int64_t cols) {
  return gpu::DeviceView(t.raw(), DType::F32, {n, cols});
}

template <typename F>
void by_dtype(DType t, F&& f) {
  if (t == DType::BF16) f.template operator()<__nv_bfloat16>();
  else if (t == DType::F32) f.template operator()<float>();
  else f.template operator()<__half>();
}

}  // namespace

MoeStepBuffers::MoeStepBuffers(const io::ModelConfig& c, gpu::CachingAllocator& a, cudaStream_t s)
    : logits(DType::F32, {c.num_experts}, a, s), ids(DType::I32, {c.experts_per_token}, a, s),
      weights(DType::F32, {c.experts_per_token}, a, s),
      shifts(raw_bytes(static_cast<size_t>(c.experts_per_token) * 3 * 8, a, s)),
      gate(DType::F32, {c.experts_per_token, c.expert_intermediate}, a, s),
      up(DType::F32, {c.experts_per_token, c.expert_intermediate}, a, s),
      y(DType::F32, {c.experts_per_token, c.hidden_size}, a, s) {
  CUDA_CHECK(cudaMemsetAsync(shifts.raw(), 0, shifts.nbytes(), s));
}

size_t MoeStepBuffers::bytes(const io::ModelConfig& c) {
  const auto k = static_cast<size_t>(c.experts_per_token);
  return rounded(static_cast<size_t>(c.num_experts) * 4) + 2 * rounded(k * 4) + rounded(k * 24) +
         2 * rounded(k * static_cast<size_t>(c.expert_intermediate) * 4) +
         rounded(k * static_cast<size_t>(c.hidden_size) * 4);
}

void MoeRowBuffers::ensure(const io::ModelConfig& c, int64_t n, gpu::CachingAllocator& a, cudaStream_t s) {
  if (n <= rows) return;
  const int64_t k = c.experts_per_token;
  logits = gpu::DeviceTensor(DType::F32, {n, c.num_experts}, a, s);
  ids = gpu::DeviceTensor(DType::I32, {n * k}, a, s);
  weights = gpu::DeviceTensor(DType::F32, {n * k}, a, s);
  order = gpu::DeviceTensor(DType::I32, {n * k}, a, s);
  order_w = gpu::DeviceTensor(DType::F32, {n * k}, a, s);
  xg = gpu::DeviceTensor(DType::F32, {n, c.hidden_size}, a, s);
  yg = gpu::DeviceTensor(DType::F32, {n, c.hidden_size}, a, s);
  gate = gpu::DeviceTensor(DType::F32, {n, c.expert_intermediate}, a, s);
  up = gpu::DeviceTensor(DType::F32, {n, c.expert_intermediate}, a, s);
  rows = n;
}

void MoeRowBuffers::ensure_slots(const io::ModelConfig& c, int64_t n, gpu::CachingAllocator& a, cudaStream_t s) {
  const int64_t r = n * c.experts_per_token;
  if (r <= slot_rows) return;
  const int64_t width = std::max(c.hidden_size, c.expert_intermediate);
  a0 = raw_bytes(static_cast<size_t>(r * width) * 2, a, s);
  a1 = raw_bytes(static_cast<size_t>(r * c.hidden_size) * 2, a, s);
  sgate = gpu::DeviceTensor(DType::F32, {r, c.expert_intermediate}, a, s);
  sup = gpu::DeviceTensor(DType::F32, {r, c.expert_intermediate}, a, s);
  sdown = gpu::DeviceTensor(DType::F32, {r, c.hidden_size}, a, s);
  scale = gpu::DeviceTensor(DType::F32, {r}, a, s);
  // Row experts, combine positions and weights (r each), chunks (at most r + experts, 4 each).
  plan = gpu::DeviceTensor(DType::I32, {3 * r + 4 * (r + c.num_experts)}, a, s);
  slot_rows = r;
}

size_t MoeRowBuffers::bytes(const io::ModelConfig& c, int64_t n) {
  const auto r = static_cast<size_t>(n), k = static_cast<size_t>(c.experts_per_token);
  const auto h = static_cast<size_t>(c.hidden_size), i = static_cast<size_t>(c.expert_intermediate);
  const size_t per_expert = rounded(r * static_cast<size_t>(c.num_experts) * 4) + 4 * rounded(r * k * 4) +
                            2 * rounded(r * h * 4) + 2 * rounded(r * i * 4);
  const size_t rk = r * k;
  const size_t grouped = rounded(rk * std::max(h, i) * 2) + rounded(rk * h * 2) + 2 * rounded(rk * i * 4) +
                         rounded(rk * h * 4) + rounded(rk * 4) +
                         rounded((3 * rk + 4 * (rk + static_cast<size_t>(c.num_experts))) * 4);
  return per_expert + grouped;
}

void moe_layer_bytes(const model::LayerWeights& w, size_t& dense, size_t& exl2, int64_t& max_exl2) {
  auto add = [&](const model::Linear& lin) {
    const bool is_dense = dynamic_cast<const model::DenseLinear*>(&lin) != nullptr;
    (is_dense ? dense : exl2) += gpu_linear_bytes(lin, false);
    if (!is_dense) max_exl2 = std::max(max_exl2, lin.in_features() * lin.out_features());
  };
  if (const auto* r = dynamic_cast<const model::DenseLinear*>(w.router.get()))
    dense += rounded(r->weight().nbytes());
  for (const model::ExpertWeights& e : w.experts)
    for (const model::Linear* lin : {e.gate.get(), e.up.get(), e.down.get()})
      if (lin) add(*lin);
  dense += rounded((1 + 3 * w.experts.size()) * 8) + rounded(w.experts.size() * 24);  // tables
  // exl2_gemv_moe's scratch (k unknown here: up to kExl2MoeMaxSlots slots): per layer and slot
  // about in / 128 steps of 72 words (doubled for short groups) and at most 8 K-split partials.
  if (!w.experts.empty() && w.experts[0].gate && w.experts[0].down &&
      dynamic_cast<const model::DenseLinear*>(w.experts[0].gate.get()) == nullptr) {
    const model::Linear &g = *w.experts[0].gate, &d = *w.experts[0].down;
    const auto slots = std::min<size_t>(w.experts.size(), gpu::kExl2MoeMaxSlots);
    const auto words = [](const model::Linear& l) {
      return static_cast<size_t>(l.in_features() / 64 + 2) * 72 + 8 * static_cast<size_t>(l.out_features() + 32);
    };
    exl2 += rounded(slots * 4 * (2 * words(g) + words(d)));
  }
}

bool moe_grouped_wins(bool exl2, int64_t slots, int64_t active, int64_t hidden, int64_t inter, size_t expert_bytes) {
  if (active <= 0) return false;
  // Rows an expert multiplies on average, and that times its [inter, hidden] (the work of one
  // expert's launch set). Crossovers measured on the H200 with 8 experts of [14336, 4096]
  // (docs/perf.md, session 28): dense between 16 and 64 rows, EXL2 between 64 and 128; at <= 8
  // rows an EXL2 expert's launch set runs the GEMV, which reads a large expert at close to the
  // memory's speed where the grouped kernel does not, and only many small experts (launches) make
  // up for that.
  constexpr double kDenseMaxWork = 2.4e9, kExl2MaxWork = 5.6e9;
  constexpr size_t kGemvMinExpertBytes = 24u << 20;
  const double rows = static_cast<double>(slots) / static_cast<double>(active);
  if (exl2 && rows <= 8.0 && expert_bytes > kGemvMinExpertBytes) return false;
  return rows * static_cast<double>(hidden) * static_cast<double>(inter) <= (exl2 ? kExl2MaxWork : kDenseMaxWork);
}

MoeLayerGpu::MoeLayerGpu(const io::ModelConfig& c, const model::LayerWeights& w, int64_t layer,
                         gpu::CachingAllocator& a, cudaStream_t s, bool on_cpu)
    : experts_(c.num_experts), k_(c.experts_per_token), inter_(c.expert_intermediate), hidden_(c.hidden_size),
      renormalize_(c.norm_topk_prob) {
  const std::string p = fmt::format("model.layers.{}.", layer);
  if (on_cpu) {
    EXQ_CHECK(w.router && static_cast<int64_t>(w.experts.size()) == experts_,
              "cuda: {}: a mixture-of-experts layer without its router and {} experts", p, experts_);
    host_ = &w;
    host_config_ = std::make_unique<io::ModelConfig>(c);
    why_host_ = "its experts run on the CPU (--cpu-moe / --n-cpu-moe)";
    return;
  }
  EXQ_CHECK(c.activation == io::Activation::Silu,
            "cuda: {}: mixture-of-experts layers run SiLU experts only", p);
  EXQ_CHECK(k_ >= 1 && k_ <= kMoeMaxTopK && k_ <= experts_,
            "cuda: {}: {} experts per token; the CUDA runtime routes 1 to {}", p, k_, kMoeMaxTopK);
  EXQ_CHECK(experts_ <= kMoeMaxExperts, "cuda: {}: {} experts; the CUDA runtime routes up to {}", p, experts_,
            kMoeMaxExperts);
  EXQ_CHECK(w.router && static_cast<int64_t>(w.experts.size()) == experts_,
            "cuda: {}: a mixture-of-experts layer without its router and {} experts", p, experts_);
  const model::MoeNames names = model::moe_names(c);
  // The router in its own dtype (f32 stays f32): the routing's discrete choice is as close to
  // the CPU's as the input allows.
  const auto* router = dynamic_cast<const model::DenseLinear*>(w.router.get());
  EXQ_CHECK(router && router->bias().empty() && router->weight().is_contiguous() &&
                router->weight().shape() == (Shape{experts_, hidden_}),
            "cuda: {}{}.gate: the router must be a dense [{}, {}] weight without a bias", p, names.block, experts_,
            hidden_);
  router_ = gpu::to_device(router->weight(), a, s);
  router_dtype_ = router_.dtype();
  for (int64_t e = 0; e < experts_; ++e) {
    const model::ExpertWeights& x = w.experts[static_cast<size_t>(e)];
    const std::string q = fmt::format("{}{}.experts.{}.", p, names.block, e);
    EXQ_CHECK(x.gate && x.up && x.down, "cuda: {}: expert without its three linears", q);
    Expert g;
    g.gate = std::make_unique<GpuLinear>(*x.gate, false, a, s, q + names.gate);
    g.up = std::make_unique<GpuLinear>(*x.up, false, a, s, q + names.up);
    g.down = std::make_unique<GpuLinear>(*x.down, false, a, s, q + names.down);
    EXQ_CHECK(g.gate->out() == inter_ && g.up->out() == inter_ && g.down->in() == inter_ && g.gate->in() == hidden_ &&
                  g.down->out() == hidden_,
              "cuda: {}: expert shapes do not match the config's {} x {}", q, inter_, hidden_);
    experts_w_.push_back(std::move(g));
  }

  // Device routing needs every expert of one kind: dense of one dtype, or EXL2 of one layout.
  const Expert& e0 = experts_w_[0];
  expert_bytes_ = e0.gate->weight_bytes() + e0.up->weight_bytes() + e0.down->weight_bytes();
  bool all_dense = true, all_exl2 = true, no_bias = true;
  for (const Expert& x : experts_w_)
    for (const GpuLinear* l : {x.gate.get(), x.up.get(), x.down.get()}) {
      (l->is_exl2() ? all_dense : all_exl2) = false;
      no_bias = no_bias && !l->has_bias();
    }
  std::vector<const void*> table = {router_.raw()};
  if (std::getenv("EXQ_MOE_HOST") != nullptr) {  // A/B timing of the host-routed step
    why_host_ = "EXQ_MOE_HOST is set";
  } else if (!no_bias) {
    why_host_ = "an expert has a bias";
  } else if (all_dense) {
    expert_dtype_ = e0.gate->dense_weight().dtype();
    for (int part = 0; part < 3; ++part)
      for (const Expert& x : experts_w_) {
        const GpuLinear* l = x.part(part);
        if (l->dense_weight().dtype() != expert_dtype_) why_host_ = "the experts' weights differ in dtype";
        table.push_back(l->dense_weight().raw());
      }
  } else if (all_exl2) {
    std::vector<int64_t> shifts;
    for (const Expert& x : experts_w_) {
      const std::pair<const GpuLinear*, const GpuLinear*> parts[] = {
          {e0.gate.get(), x.gate.get()}, {e0.up.get(), x.up.get()}, {e0.down.get(), x.down.get()}};
      for (const auto& [first, other] : parts) {
        if (!gpu::exl2_same_layout(*first->exl2_layer(), *other->exl2_layer()))
          why_host_ = "the EXL2 experts differ in layout (bit widths, groups) or need GEMV kernel 1";
        shifts.push_back(gpu::exl2_shift_bytes(*first->exl2_layer(), *other->exl2_layer()));
      }
    }
    if (why_host_.empty()) {
      exl2_ = true;
      shift_table_ = raw_bytes(shifts.size() * 8, a, s);
      CUDA_CHECK(cudaMemcpyAsync(shift_table_.raw(), shifts.data(), shifts.size() * 8, cudaMemcpyHostToDevice, s));
      // The shifted launches run GEMV kernel 2 (exl2_same_layout checked every expert can).
      gate_up0_ = gpu::Exl2LayerGroup({e0.gate->exl2_layer(), e0.up->exl2_layer()});
      if (gate_up0_.split().kernel != 2) gate_up0_.set_kernel(2);
      gpu::Exl2Layer* down0 = e0.down->exl2_layer();
      if (down0->split().kernel != 2) down0->set_kernel(2);
      down0_ = gpu::Exl2LayerGroup({down0});
      down0_.set_split(down0->split());
      const int k = static_cast<int>(k_);
      // The per-slot launches stay for more than kExl2MoeMaxSlots experts a token (the grouped
      // kernel parameter's room) and for EXQ_MOE_PER_SLOT=1 (A/B timing).
      grouped_ = std::getenv("EXQ_MOE_PER_SLOT") == nullptr && gpu::exl2_moe_grouped(gate_up0_, k) &&
                 gpu::exl2_moe_grouped(down0_, k);
      if (grouped_) {
        gate_up_scratch_ = gpu::exl2_moe_scratch_bytes(gate_up0_, k);
        moe_scratch_ = raw_bytes(gate_up_scratch_ + gpu::exl2_moe_scratch_bytes(down0_, k), a, s);
      }
    }
  } else {
    why_host_ = "the experts mix dense and EXL2 weights";
  }
  // The grouped expert GEMM for rows(): it reads every unit of expert 0's layout (all experts
  // share it) or 16-byte rows of dense weights; its staging holds a row in shared memory.
  if (why_host_.empty() && std::max(hidden_, inter_) <= kMoeStageMaxIn) {
    // EXQ_MOE_ROWS=experts / grouped: one path for every pass (A/B timing), else moe_grouped_wins.
    const char* env = std::getenv("EXQ_MOE_ROWS");
    const std::string mode = env != nullptr ? env : "";
    const bool wanted = mode != "experts";
    force_grouped_ = mode == "grouped";
    if (exl2_) {
      bool ok = true;
      for (const GpuLinear* l : {e0.gate.get(), e0.up.get(), e0.down.get()})
        ok = ok && l->exl2_layer()->expert_gemm_ok();
      if (ok) {
        std::vector<const int32_t*> perms;
        for (const Expert& x : experts_w_)
          for (const GpuLinear* l : {x.gate.get(), x.up.get(), x.down.get()}) perms.push_back(l->exl2_layer()->q_perm());
        perm_table_ = raw_bytes(perms.size() * 8, a, s);
        CUDA_CHECK(cudaMemcpyAsync(perm_table_.raw(), perms.data(), perms.size() * 8, cudaMemcpyHostToDevice, s));
      }
      grouped_rows_ = ok && wanted;
    } else {
      grouped_rows_ = wanted && gpu::expert_gemm_dense_ok(static_cast<int>(hidden_)) &&
                      gpu::expert_gemm_dense_ok(static_cast<int>(inter_)) &&
                      (expert_dtype_ == DType::F16 || expert_dtype_ == DType::BF16);
    }
  }
  table_ = raw_bytes(table.size() * 8, a, s);
  CUDA_CHECK(cudaMemcpyAsync(table_.raw(), table.data(), table.size() * 8, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));  // the host tables above are freed
}

size_t MoeLayerGpu::step_bytes() const {
  size_t all = 0;
  for (const Expert& x : experts_w_) all += x.gate->weight_bytes() + x.up->weight_bytes() + x.down->weight_bytes();
  return router_.nbytes() + all / static_cast<size_t>(experts_) * static_cast<size_t>(k_);
}

int64_t MoeLayerGpu::dequant_elems() const {
  int64_t m = 0;
  for (const Expert& x : experts_w_)
    for (const GpuLinear* l : {x.gate.get(), x.up.get(), x.down.get()}) m = std::max(m, l->dequant_elems());
  return m;
}

void MoeLayerGpu::reserve(gpu::Exl2Workspace& ws, cudaStream_t s) const {
  for (const Expert& x : experts_w_)
    for (const GpuLinear* l : {x.gate.get(), x.up.get(), x.down.get()}) l->reserve(ws, s);
  if (!gate_up0_.empty()) ws.reserve(gate_up0_, s);
}

void MoeLayerGpu::router_logits(const gpu::DeviceView& xn, float* logits, cudaStream_t s) const {
  const auto* table = static_cast<const void* const*>(table_.raw());
  const auto rows = static_cast<int>(xn.dim(0));
  by_dtype(router_dtype_, [&]<typename T>() {
    moe_gemv_cuda<T>(table, nullptr, 1, rows, xn.data<float>(), 0, nullptr, logits, 0,
                     static_cast<int>(experts_), static_cast<int>(hidden_), s);
  });
}

void MoeLayerGpu::decode(MoeStepBuffers& b, const LinearScratch& sc, const gpu::DeviceView& xn,
                         const gpu::DeviceView& out, cudaStream_t s,
                         const std::function<void(const char*)>& mark) const {
  EXQ_CHECK(device_routed(), "cuda: a MoE layer routed on the host ({}) cannot run in the decode graph", why_host_);
  const auto at = [&](const char* op) {
    if (mark) mark(op);
  };
  const int k = static_cast<int>(k_), inter = static_cast<int>(inter_), hidden = static_cast<int>(hidden_);
  router_logits(xn, b.logits.view().data<float>(), s);
  at("moe.route");
  auto* shifts = static_cast<int64_t*>(b.shifts.raw());
  moe_route_cuda(b.logits.view().data<float>(), 1, static_cast<int>(experts_), k, renormalize_,
                 b.ids.view().data<int32_t>(), b.weights.view().data<float>(),
                 exl2_ ? static_cast<const int64_t*>(shift_table_.raw()) : nullptr, shifts, s);
  const int32_t* ids = b.ids.view().data<int32_t>();
  float* g = b.gate.view().data<float>();
  float* u = b.up.view().data<float>();
  float* y = b.y.view().data<float>();
  at("moe.experts");
  if (grouped_) {
    auto* scratch = static_cast<uint8_t*>(moe_scratch_.raw());
    gpu::exl2_gemv_moe(gate_up0_, k, xn, nullptr, {b.gate.view(), b.up.view()}, shifts, 3, scratch,
                       gate_up_scratch_, s);
    at("moe.down");
    const gpu::DeviceView up = b.up.view();
    gpu::exl2_gemv_moe(down0_, k, b.gate.view(), &up, {b.y.view()}, shifts + 2, 3, scratch + gate_up_scratch_,
                       moe_scratch_.nbytes() - gate_up_scratch_, s);
  } else if (exl2_) {
    const Expert& e0 = experts_w_[0];
    for (int i = 0; i < k; ++i) {
      const gpu::DeviceView gi = b.gate.view().slice0(i, i + 1), ui = b.up.view().slice0(i, i + 1);
      gpu::exl2_gemv_group(gate_up0_, xn, {gi, ui}, *sc.exl2, s, true, {shifts + 3 * i, shifts + 3 * i + 1});
      gpu::exl2_gemv_swiglu(*e0.down->exl2_layer(), gi, ui, b.y.view().slice0(i, i + 1), *sc.exl2, s, true,
                            false, shifts + 3 * i + 2);
    }
  } else {
    const auto* table = static_cast<const void* const*>(table_.raw());
    const auto E = static_cast<size_t>(experts_);
    by_dtype(expert_dtype_, [&]<typename T>() {
      moe_gemv_cuda<T>(table + 1, ids, k, 1, xn.data<float>(), 0, nullptr, g, inter, inter, hidden, s);
      moe_gemv_cuda<T>(table + 1 + E, ids, k, 1, xn.data<float>(), 0, nullptr, u, inter, inter, hidden, s);
      moe_gemv_cuda<T>(table + 1 + 2 * E, ids, k, 1, g, inter, u, y, hidden, hidden, inter, s);
    });
  }
  at("moe.combine");
  moe_combine_cuda(y, ids, b.weights.view().data<float>(), k, hidden, out.data<float>(), s);
}

void MoeLayerGpu::rows_on_cpu(MoeRowBuffers& b, const gpu::DeviceView& xn, const gpu::DeviceView& out,
                              cudaStream_t s) const {
  EXQ_CHECK(xn.is_contiguous() && out.is_contiguous() && out.shape() == xn.shape(),
            "cuda: MoE rows on the CPU need contiguous [n, hidden] input and output");
  const size_t bytes = xn.nbytes();
  if (b.host_in.size() < bytes) {
    b.host_in = gpu::PinnedBuffer(bytes);
    b.host_out = gpu::PinnedBuffer(bytes);
  }
  // The previous layer's upload from host_out is ordered before this download and its wait.
  CUDA_CHECK(cudaMemcpyAsync(b.host_in.data(), xn.raw(), bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  const TensorView in(b.host_in.data(), DType::F32, xn.shape()), y(b.host_out.data(), DType::F32, xn.shape());
  model::moe_mlp(*host_config_, *host_, in, y);
  CUDA_CHECK(cudaMemcpyAsync(out.raw(), b.host_out.data(), bytes, cudaMemcpyHostToDevice, s));
}

void MoeLayerGpu::rows(MoeRowBuffers& b, const LinearScratch& sc, const gpu::DeviceView& xn,
                       const gpu::DeviceView& out, cudaStream_t s) const {
  if (host_) {
    rows_on_cpu(b, xn, out, s);
    return;
  }
  const int64_t n = xn.dim(0), k = k_;
  EXQ_CHECK(b.rows >= n, "cuda: MoE row buffers of {} rows for {}", b.rows, n);
  router_logits(xn, b.logits.view().data<float>(), s);
  moe_route_cuda(b.logits.view().data<float>(), static_cast<int>(n), static_cast<int>(experts_), static_cast<int>(k),
                 renormalize_, b.ids.view().data<int32_t>(), b.weights.view().data<float>(), nullptr, nullptr, s);
  const auto nk = static_cast<size_t>(n * k);
  b.host_ids.resize(nk);
  b.host_weights.resize(nk);
  CUDA_CHECK(cudaMemcpyAsync(b.host_ids.data(), b.ids.raw(), nk * 4, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaMemcpyAsync(b.host_weights.data(), b.weights.raw(), nk * 4, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  // Rows grouped by expert, in expert order (moe_mlp's), with their weights.
  const model::ExpertGroups groups = model::group_by_expert(b.host_ids, b.host_weights, experts_, k);
  if (grouped_rows_) {
    int64_t active = 0;
    for (int64_t e = 0; e < experts_; ++e) active += groups.count(e) > 0;
    if (force_grouped_ ||
        moe_grouped_wins(exl2_, static_cast<int64_t>(nk), active, hidden_, inter_, expert_bytes_)) {
      rows_grouped(b, groups, n, xn, out, s);
      return;
    }
  }
  b.host_order = groups.token;
  b.host_order_w = groups.weight;
  CUDA_CHECK(cudaMemcpyAsync(b.order.raw(), b.host_order.data(), nk * 4, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(b.order_w.raw(), b.host_order_w.data(), nk * 4, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), s));
  const int hidden = static_cast<int>(hidden_);
  for (size_t e = 0; e < static_cast<size_t>(experts_); ++e) {
    const int64_t r0 = groups.first[e], m = groups.count(static_cast<int64_t>(e));
    if (m == 0) continue;
    const Expert& x = experts_w_[e];
    const int32_t* idx = b.order.view().data<int32_t>() + r0;
    const gpu::DeviceView xg = rows_of(b.xg, m, hidden_), yg = rows_of(b.yg, m, hidden_);
    const gpu::DeviceView g = rows_of(b.gate, m, inter_), u = rows_of(b.up, m, inter_);
    moe_gather_cuda(xn.data<float>(), idx, static_cast<int>(m), hidden, xg.data<float>(), s);
    x.gate->forward(sc, xg, g, s);
    x.up->forward(sc, xg, u, s);
    if (!x.down->forward_swiglu(sc, g, u, yg, s)) {
      gpu::swiglu(g, u, g, s);
      x.down->forward(sc, g, yg, s);
    }
    moe_scatter_add_cuda(yg.data<float>(), idx, b.order_w.view().data<float>() + r0, static_cast<int>(m), hidden,
                         out.data<float>(), s);
  }
  // The host vectors are read by the copies above: pageable sources are staged before return.
}

void MoeLayerGpu::rows_grouped(MoeRowBuffers& b, const model::ExpertGroups& groups, int64_t n,
                               const gpu::DeviceView& xn, const gpu::DeviceView& out, cudaStream_t s) const {
  // Needs the MoeRowBuffers of the caller's CachingAllocator: ensure_slots grows them.
  EXQ_CHECK(b.slot_rows >= n * k_, "cuda: MoE slot buffers of {} rows for {}", b.slot_rows, n * k_);
  const int64_t k = k_, r = n * k;
  // The plan: row experts [r], combine positions [r], combine weights [r], chunks [c][4].
  std::vector<int32_t>& p = b.host_plan;
  p.assign(static_cast<size_t>(3 * r), 0);
  int32_t* row_expert = p.data();
  int32_t* pos = row_expert + r;
  auto* wts = reinterpret_cast<float*>(pos + r);
  std::vector<int32_t> filled(static_cast<size_t>(n), 0);
  for (int64_t e = 0; e < experts_; ++e)
    for (int64_t i = groups.first[static_cast<size_t>(e)]; i < groups.first[static_cast<size_t>(e) + 1]; ++i) {
      row_expert[i] = static_cast<int32_t>(e);
      const int32_t t = groups.token[static_cast<size_t>(i)];
      const int64_t slot = t * k + filled[static_cast<size_t>(t)]++;  // in ascending expert order
      pos[slot] = static_cast<int32_t>(i);
      wts[slot] = groups.weight[static_cast<size_t>(i)];
    }
  std::vector<gpu::ExpertChunk> chunk_list;
  for (int64_t e = 0; e < experts_; ++e)
    gpu::add_expert_chunks(chunk_list, static_cast<int>(e), groups.first[static_cast<size_t>(e)], groups.count(e));
  static_assert(sizeof(gpu::ExpertChunk) == 4 * sizeof(int32_t));
  const auto* chunk_words = reinterpret_cast<const int32_t*>(chunk_list.data());
  p.insert(p.end(), chunk_words, chunk_words + 4 * chunk_list.size());
  const int chunks = static_cast<int>(chunk_list.size());
  auto* plan = b.plan.view().data<int32_t>();
  CUDA_CHECK(cudaMemcpyAsync(plan, p.data(), p.size() * 4, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(b.order.raw(), groups.token.data(), static_cast<size_t>(r) * 4, cudaMemcpyHostToDevice, s));
  const auto* d_expert = plan;
  const auto* d_pos = plan + r;
  const auto* d_w = reinterpret_cast<const float*>(plan + 2 * r);
  const auto* d_chunks = reinterpret_cast<const gpu::ExpertChunk*>(plan + 3 * r);
  const int32_t* token = b.order.view().data<int32_t>();
  float* scale = b.scale.view().data<float>();
  float *g = b.sgate.view().data<float>(), *u = b.sup.view().data<float>(), *yd = b.sdown.view().data<float>();
  const auto* perms = exl2_ ? static_cast<const int32_t* const*>(perm_table_.raw()) : nullptr;
  const auto* shifts = exl2_ ? static_cast<const int64_t*>(shift_table_.raw()) : nullptr;
  const auto* table = static_cast<const void* const*>(table_.raw());
  const int hidden = static_cast<int>(hidden_), inter = static_cast<int>(inter_), rows = static_cast<int>(r);

  auto layer = [&](int part, const void* a, float* y, int out_cols) {
    gpu::ExpertGemmLayer l;
    l.a = a;
    l.y = y;
    l.out = out_cols;
    if (exl2_) {
      l.d = experts_w_[0].part(part)->exl2_layer()->desc();
      l.shifts = shifts + part;
      l.stride = 3;
    } else {
      l.weights = table + 1 + part * experts_;
      l.stride = 1;
    }
    return l;
  };
  auto run = [&]<typename T>(T*) {
    T* a0 = static_cast<T*>(b.a0.raw());
    T* a1 = static_cast<T*>(b.a1.raw());
    auto gemm = [&](const gpu::ExpertGemm& eg) {
      if (exl2_) gpu::expert_gemm_exl2_cuda(eg, s);
      else gpu::expert_gemm_dense_cuda<T>(eg, s);
    };
    moe_stage_rows_cuda<T>(xn.data<float>(), nullptr, token, d_expert, rows, hidden, perms, 3, 2, a0, a1, scale, s);
    gpu::ExpertGemm gu;
    gu.layers = 2;
    gu.in = hidden;
    gu.l[0] = layer(0, a0, g, inter);
    gu.l[1] = layer(1, a1, u, inter);
    gu.chunks = d_chunks;
    gu.num_chunks = chunks;
    gu.row_scale = scale;
    gemm(gu);
    moe_stage_rows_cuda<T>(g, u, nullptr, d_expert, rows, inter, perms != nullptr ? perms + 2 : nullptr, 3, 1, a0,
                           nullptr, scale, s);
    gpu::ExpertGemm dn = gu;
    dn.layers = 1;
    dn.in = inter;
    dn.l[0] = layer(2, a0, yd, hidden);
    gemm(dn);
  };
  if (!exl2_ && expert_dtype_ == DType::BF16) run(static_cast<__nv_bfloat16*>(nullptr));
  else run(static_cast<__half*>(nullptr));
  moe_combine_rows_cuda(yd, d_pos, d_w, static_cast<int>(n), static_cast<int>(k), hidden, out.data<float>(), s);
  // The host plan is read by the copy above (pageable: staged before the call returns).
}

}  // namespace exq::runtime::cuda
