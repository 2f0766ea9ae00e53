#include "runtime/cuda/cuda_weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul.h"
#include "core/half.h"
#include "model/exl2_linear.h"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {
namespace {

namespace gpu = exq::cuda;

constexpr float kHalfMax = 65504.0f;
constexpr size_t kSectionAlign = 256;

// q_weight rows of an EXL2 layer: where the last group ends.
int64_t exl2_words(const cpu::Exl2MatmulWeight& w) {
  int64_t words = 0;
  for (int64_t g = 0; g < w.num_groups; ++g) {
    const cpu::Exl2MatmulGroup& gr = w.groups[g];
    words = std::max(words, gr.word_begin + (gr.rows * gr.bits + 31) / 32);
  }
  return words;
}

size_t align_up(size_t v) { return (v + kSectionAlign - 1) / kSectionAlign * kSectionAlign; }

}  // namespace

Tensor device_weight_copy(const TensorView& t) {
  if (t.dtype() == DType::F16 || t.dtype() == DType::BF16) return Tensor();
  const Tensor f = to_f32(t);
  const auto v = f.span<const float>();
  float amax = 0.0f;
  for (float x : v) amax = std::max(amax, std::fabs(x));
  const DType dt = amax <= kHalfMax ? DType::F16 : DType::BF16;
  Tensor out(dt, t.shape());
  uint16_t* o = out.data<uint16_t>();
  for (size_t i = 0; i < v.size(); ++i) o[i] = dt == DType::F16 ? float_to_half(v[i]) : float_to_bf16(v[i]);
  return out;
}

size_t gpu_linear_bytes(const model::Linear& linear, bool has_bias) {
  const int64_t in = linear.in_features(), out = linear.out_features();
  if (const auto* e = dynamic_cast<const model::Exl2Linear*>(&linear)) {
    const cpu::Exl2MatmulWeight& w = e->matmul_weight();
    const size_t out_pad = static_cast<size_t>(w.out_pad);
    const size_t units = static_cast<size_t>(in / 32 + w.num_groups);  // at most
    const size_t bytes = align_up(static_cast<size_t>(exl2_words(w)) * out_pad * 4) +
                         align_up(static_cast<size_t>(w.num_groups) * (out_pad / 8) * 4) +
                         align_up(units * 16) + align_up(units) +
                         2 * align_up(static_cast<size_t>(in) * 4) +
                         (w.bias ? static_cast<size_t>(out) * 2 : 0);
    return gpu::CachingAllocator::round_size(bytes);
  }
  size_t bytes = gpu::CachingAllocator::round_size(static_cast<size_t>(in * out) * 2);
  if (has_bias) bytes += gpu::CachingAllocator::round_size(static_cast<size_t>(out) * 4);
  return bytes;
}

GpuLinear::GpuLinear(const model::Linear& linear, bool has_bias, gpu::CachingAllocator& alloc,
                     cudaStream_t stream, const std::string& name,
                     const gpu::DeviceView& shared_dense)
    : in_(linear.in_features()), out_(linear.out_features()) {
  if (const auto* e = dynamic_cast<const model::Exl2Linear*>(&linear)) {
    const cpu::Exl2MatmulWeight& w = e->matmul_weight();
    std::vector<gpu::Exl2HostGroup> groups;
    for (int64_t g = 0; g < w.num_groups; ++g)
      groups.push_back({w.groups[g].bits, w.groups[g].row_begin, w.groups[g].rows, w.groups[g].word_begin});
    gpu::Exl2HostLayer h;
    h.in = w.in;
    h.out = w.out;
    h.q_weight = w.q_weight;
    h.q_weight_rows = exl2_words(w);
    h.q_scale = w.q_scale;
    h.q_scale_max = w.q_scale_max;
    h.q_perm = w.q_perm;
    h.groups = groups.data();
    h.num_groups = static_cast<int64_t>(groups.size());
    h.bias = w.bias;  // set only when the config gives the layer a bias
    exl2_ = gpu::Exl2Layer(h, stream, name.c_str());
    return;
  }
  const auto* dense = dynamic_cast<const model::DenseLinear*>(&linear);
  if (!dense)
    throw Error(fmt::format("{}: this kind of linear layer has no CUDA implementation", name));
  if (!shared_dense.empty()) {
    shared_dense.expect(shared_dense.dtype(), {out_, in_}, name);
    weight_ = shared_dense;
  } else {
    const Tensor converted = device_weight_copy(dense->weight());
    dense_ = gpu::to_device(converted.empty() ? dense->weight() : converted.view(), alloc, stream);
    weight_ = dense_.view();
    CUDA_CHECK(cudaStreamSynchronize(stream));  // `converted` is freed below
  }
  if (has_bias) {
    // The layer's bias as the CPU holds it (f32): its output for a zero input row.
    const Tensor zero = Tensor::zeros(DType::F32, {1, in_});
    Tensor bias(DType::F32, {1, out_});
    linear.forward(zero.view(), bias.view());
    bias_ = gpu::to_device(bias.view().reshape({out_}), alloc, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
}

size_t GpuLinear::weight_bytes() const {
  const size_t bias = bias_.empty() ? 0 : bias_.nbytes();
  return (is_exl2() ? exl2_.weight_bytes() : weight_.nbytes()) + bias;
}

void GpuLinear::reserve(gpu::Exl2Workspace& ws, cudaStream_t stream) const {
  if (is_exl2()) ws.reserve(exl2_, stream);
}

void GpuLinear::forward(const LinearScratch& s, const gpu::DeviceView& x, const gpu::DeviceView& y,
                        cudaStream_t stream) const {
  const int64_t rows = x.dim(0);
  if (is_exl2() && rows >= 1 && rows <= gpu::kExl2GemvMaxRows) {
    gpu::exl2_gemv(exl2_, x, y, *s.exl2, stream);
    return;
  }
  matmul(s, x, nullptr, y, stream);
}

void GpuLinear::matmul(const LinearScratch& s, const gpu::DeviceView& x, const gpu::DeviceView* up,
                       const gpu::DeviceView& y, cudaStream_t stream, bool gelu) const {
  if (is_exl2()) {
    EXQ_CHECK(!s.dequant.empty() && s.dequant.numel() >= in_ * out_,
              "cuda runtime: no dequantization scratch for an EXL2 layer [{}, {}]", out_, in_);
    const gpu::DeviceView w = s.dequant.slice0(0, in_ * out_).reshape({out_, in_});
    gpu::exl2_matmul(*s.cublas, exl2_, x, y, *s.exl2, w, s.matmul_ws, stream, true, up, gelu);
    return;
  }
  gpu::matmul(*s.cublas, x, weight_, y, s.matmul_ws, stream, nullptr, up, gelu);
  if (!bias_.empty())
    add_bias_f32_cuda(y.data<float>(), bias_.view().data<float>(), static_cast<int>(x.dim(0)),
                      static_cast<int>(out_), stream);
}

void GpuLinear::forward_staged(const LinearScratch& s, const gpu::DeviceView& y,
                               cudaStream_t stream) const {
  EXQ_CHECK(is_exl2(), "cuda runtime: forward_staged needs an EXL2 layer");
  gpu::exl2_gemv_staged(exl2_, y, *s.exl2, stream);
}

bool GpuLinear::forward_swiglu(const LinearScratch& s, const gpu::DeviceView& gate,
                               const gpu::DeviceView& up, const gpu::DeviceView& y,
                               cudaStream_t stream, bool gelu) const {
  const int64_t rows = gate.dim(0);
  if (rows < 1) return false;
  if (is_exl2() && rows <= gpu::kExl2GemvMaxRows) {
    gpu::exl2_gemv_swiglu(exl2_, gate, up, y, *s.exl2, stream, true, gelu);
    return true;
  }
  if (rows <= gpu::kExl2GemvMaxRows || !gpu::matmul_copies_fit(in_)) return false;
  matmul(s, gate, &up, y, stream, gelu);
  return true;
}

GpuLinearGroup::GpuLinearGroup(std::vector<const GpuLinear*> linears)
    : linears_(std::move(linears)) {
  if (std::getenv("EXQ_DECODE_NO_GROUP") != nullptr) return;
  std::vector<const gpu::Exl2Layer*> layers;
  for (const GpuLinear* l : linears_) {
    if (l->exl2_layer() == nullptr) return;
    layers.push_back(l->exl2_layer());
  }
  exl2_ = gpu::Exl2LayerGroup(layers);
}

void GpuLinearGroup::reserve(gpu::Exl2Workspace& ws, cudaStream_t stream) const {
  for (const GpuLinear* l : linears_) l->reserve(ws, stream);
  if (!exl2_.empty()) ws.reserve(exl2_, stream);
}

void GpuLinearGroup::forward(const LinearScratch& s, const gpu::DeviceView& x,
                             const std::vector<gpu::DeviceView>& ys, cudaStream_t stream) const {
  if (exl2_.empty() || x.dim(0) > gpu::kExl2GemvMaxRows) {
    forward_each(s, x, ys, stream);
    return;
  }
  gpu::exl2_gemv_group(exl2_, x, ys, *s.exl2, stream);
}

void GpuLinearGroup::forward_each(const LinearScratch& s, const gpu::DeviceView& x,
                                  const std::vector<gpu::DeviceView>& ys,
                                  cudaStream_t stream) const {
  EXQ_CHECK(ys.size() == linears_.size(), "cuda runtime: {} outputs for {} linears", ys.size(),
            linears_.size());
  for (size_t i = 0; i < linears_.size(); ++i) linears_[i]->forward(s, x, ys[i], stream);
}

}  // namespace exq::runtime::cuda
