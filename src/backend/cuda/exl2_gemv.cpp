#include "backend/cuda/exl2_gemv.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/validate.h"
#include "core/error.h"
#include "core/half.h"

namespace exq::cuda {
namespace {

constexpr size_t kSectionAlign = 256;

size_t align_up(size_t v) { return (v + kSectionAlign - 1) / kSectionAlign * kSectionAlign; }

bool valid_bits(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

int multiprocessors() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Every 8-tile column of the output gets its own blocks, and K is split as finely as one wave
// of blocks allows, but into at least 4 steps per block (x is staged once per block and each
// split adds a cross-block reduction). Fitted to a sweep on an H100 (docs/perf.md, "CUDA EXL2
// GEMV"): it picks the fastest measured split, or one within 3 %, on the Llama-3-8B shapes.
Exl2Split choose_split(const Exl2Desc& d) {
  const int groups = (d.out_pad / kExl2TileColumns + 7) / 8, steps = d.num_steps;
  const int sms = multiprocessors();
  auto split_for = [&](int spb) {
    Exl2Split sp;
    sp.blocks_k = (steps + spb - 1) / spb;
    sp.steps_per_block = (steps + sp.blocks_k - 1) / sp.blocks_k;
    return sp;
  };
  for (int spb = std::min(4, steps); spb <= std::min(steps, kExl2MaxStepsPerBlock); ++spb) {
    Exl2Split sp = split_for(spb);
    const int64_t slots = static_cast<int64_t>(exl2_gemv_blocks_per_sm(d, sp.steps_per_block)) * sms;
    if (static_cast<int64_t>(groups) * sp.blocks_k <= slots) {
      sp.tile_blocks = groups;
      return sp;
    }
  }
  // Too wide for one wave even with the longest K range: block columns loop over tile groups.
  Exl2Split sp = split_for(std::min(steps, kExl2MaxStepsPerBlock));
  const int slots = exl2_gemv_blocks_per_sm(d, sp.steps_per_block) * sms;
  EXQ_CHECK(slots > 0, "cuda exl2: the GEMV kernel does not fit a multiprocessor");
  sp.tile_blocks = std::max(1, std::min(groups, slots / sp.blocks_k));
  return sp;
}

void validate(const Exl2HostLayer& h, const char* name) {
  EXQ_CHECK(h.in > 0 && h.out > 0, "{}: in and out must be positive, got in {} out {}", name,
            h.in, h.out);
  EXQ_CHECK(h.in <= (int64_t{1} << 30) && h.out <= (int64_t{1} << 30),
            "{}: shape {}x{} too large", name, h.out, h.in);
  EXQ_CHECK(h.q_weight && h.q_scale && h.q_scale_max && h.q_perm && h.groups,
            "{}: missing tensor pointer", name);
  EXQ_CHECK(h.num_groups > 0, "{}: no groups", name);
  int64_t row = 0, word = 0;
  for (int64_t g = 0; g < h.num_groups; ++g) {
    const Exl2HostGroup& gr = h.groups[g];
    EXQ_CHECK(valid_bits(gr.bits), "{}: group {} has bit width {}, expected 2,3,4,5,6 or 8",
              name, g, gr.bits);
    EXQ_CHECK(gr.row_begin == row && gr.rows > 0,
              "{}: group {} covers rows [{}, +{}), expected to start at row {}", name, g,
              gr.row_begin, gr.rows, row);
    EXQ_CHECK(gr.word_begin == word, "{}: group {} starts at q_weight row {}, expected {}", name,
              g, gr.word_begin, word);
    row += gr.rows;
    word += (gr.rows * gr.bits + 31) / 32;
  }
  EXQ_CHECK(row == h.in, "{}: groups cover {} input rows, expected {}", name, row, h.in);
  EXQ_CHECK(word == h.q_weight_rows, "{}: groups need {} q_weight rows, q_weight has {}", name,
            word, h.q_weight_rows);
  std::vector<bool> seen(static_cast<size_t>(h.in), false);
  for (int64_t i = 0; i < h.in; ++i) {
    const int32_t p = h.q_perm[i];
    EXQ_CHECK(p >= 0 && p < h.in && !seen[static_cast<size_t>(p)],
              "{}: q_perm[{}] = {} is out of range or repeated (in {})", name, i, p, h.in);
    seen[static_cast<size_t>(p)] = true;
  }
}

}  // namespace

Exl2Layer::Exl2Layer(const Exl2HostLayer& h, cudaStream_t stream, const char* name) {
  validate(h, name);
  const int64_t out_pad = (h.out + 31) / 32 * 32;
  std::vector<Exl2Unit> units;
  for (int64_t g = 0; g < h.num_groups; ++g) {
    const Exl2HostGroup& gr = h.groups[g];
    const uint16_t m = float_to_half(half_to_float(h.q_scale_max[g]) / 256.0f);
    for (int64_t r = 0; r < gr.rows; r += kExl2UnitRows) {
      const int64_t rows = std::min<int64_t>(kExl2UnitRows, gr.rows - r);
      units.push_back({static_cast<int32_t>(gr.word_begin + r / kExl2UnitRows * gr.bits),
                       static_cast<int32_t>(gr.row_begin + r), static_cast<int32_t>(g),
                       static_cast<uint32_t>(gr.bits) | static_cast<uint32_t>(rows) << 8 |
                           static_cast<uint32_t>(m) << 16});
    }
  }
  // x_slot[q_perm[r]] = unit * 32 + row within the unit, for permuted row r.
  std::vector<int32_t> x_slot(static_cast<size_t>(h.in));
  for (size_t u = 0; u < units.size(); ++u)
    for (uint32_t k = 0; k < ((units[u].info >> 8) & 0xff); ++k)
      x_slot[static_cast<size_t>(h.q_perm[units[u].row_base + k])] =
          static_cast<int32_t>(u * kExl2UnitRows + k);
  const int64_t steps = (static_cast<int64_t>(units.size()) + kExl2UnitsPerStep - 1) /
                        kExl2UnitsPerStep;
  std::vector<uint8_t> step_bits(static_cast<size_t>(steps));
  for (int64_t s = 0; s < steps; ++s) {
    const size_t u0 = static_cast<size_t>(s * kExl2UnitsPerStep);
    const size_t u1 = std::min(units.size(), u0 + kExl2UnitsPerStep);
    uint32_t bits = units[u0].info & 0xff;
    for (size_t u = u0; u < u1; ++u)
      if ((units[u].info & 0xff) != bits) bits = 0;
    step_bits[static_cast<size_t>(s)] = static_cast<uint8_t>(bits);
  }

  // One host image of every section, one copy.
  const size_t qw_bytes = static_cast<size_t>(h.q_weight_rows * out_pad) * 4;
  const size_t qs_bytes = static_cast<size_t>(h.num_groups * (out_pad / 8)) * 4;
  const size_t off_qs = align_up(qw_bytes);
  const size_t off_units = off_qs + align_up(qs_bytes);
  const size_t off_steps = off_units + align_up(units.size() * sizeof(Exl2Unit));
  const size_t off_perm = off_steps + align_up(step_bits.size());
  const size_t off_slot = off_perm + align_up(static_cast<size_t>(h.in) * 4);
  const size_t off_bias = off_slot + align_up(static_cast<size_t>(h.in) * 4);
  const size_t total = off_bias + (h.bias ? static_cast<size_t>(h.out) * 2 : 0);
  std::vector<uint8_t> image(total, 0);
  std::memcpy(image.data(), h.q_weight, qw_bytes);
  std::memcpy(image.data() + off_qs, h.q_scale, qs_bytes);
  std::memcpy(image.data() + off_units, units.data(), units.size() * sizeof(Exl2Unit));
  std::memcpy(image.data() + off_steps, step_bits.data(), step_bits.size());
  std::memcpy(image.data() + off_perm, h.q_perm, static_cast<size_t>(h.in) * 4);
  std::memcpy(image.data() + off_slot, x_slot.data(), static_cast<size_t>(h.in) * 4);
  if (h.bias) std::memcpy(image.data() + off_bias, h.bias, static_cast<size_t>(h.out) * 2);
  buffer_ = DeviceBuffer(total);
  CUDA_CHECK(cudaMemcpyAsync(buffer_.data(), image.data(), total, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));

  auto* base = static_cast<uint8_t*>(buffer_.data());
  desc_.q_weight = reinterpret_cast<const uint32_t*>(base);
  desc_.q_scale = reinterpret_cast<const uint32_t*>(base + off_qs);
  desc_.units = reinterpret_cast<const Exl2Unit*>(base + off_units);
  desc_.step_bits = base + off_steps;
  desc_.q_perm = reinterpret_cast<const int32_t*>(base + off_perm);
  desc_.x_slot = reinterpret_cast<const int32_t*>(base + off_slot);
  desc_.bias = h.bias ? reinterpret_cast<const __half*>(base + off_bias) : nullptr;
  desc_.in = static_cast<int>(h.in);
  desc_.out = static_cast<int>(h.out);
  desc_.out_pad = static_cast<int>(out_pad);
  desc_.num_units = static_cast<int>(units.size());
  desc_.num_steps = static_cast<int>(steps);
  desc_.uniform_bits = h.groups[0].bits;
  for (int64_t g = 1; g < h.num_groups; ++g)
    if (h.groups[g].bits != desc_.uniform_bits) desc_.uniform_bits = 0;
  split_ = choose_split(desc_);
  weight_bytes_ = qw_bytes + qs_bytes + static_cast<size_t>(h.num_groups) * (2 + 4);
}

void Exl2Layer::set_split(const Exl2Split& split) {
  const int tiles = (desc_.out_pad / kExl2TileColumns + 7) / 8;  // tile groups
  EXQ_CHECK(split.steps_per_block >= 1 && split.steps_per_block <= kExl2MaxStepsPerBlock &&
                split.blocks_k >= 1 &&
                split.blocks_k == (desc_.num_steps + split.steps_per_block - 1) /
                                      split.steps_per_block &&
                split.tile_blocks >= 1 && split.tile_blocks <= tiles,
            "cuda exl2: split (blocks_k {}, steps_per_block {}, tile_blocks {}) does not fit {} "
            "steps and {} groups of 8 tiles",
            split.blocks_k, split.steps_per_block, split.tile_blocks, desc_.num_steps, tiles);
  split_ = split;
}

int* Exl2Workspace::counters() const {
  return reinterpret_cast<int*>(buffer_.as<float>() + partial_floats_);
}

void Exl2Workspace::reserve(const Exl2Layer& layer, cudaStream_t stream) {
  const size_t floats = exl2_gemv_partial_floats(layer.desc(), layer.split());
  const size_t ints = exl2_gemv_counter_ints(layer.desc());
  if (floats <= partial_floats_ && ints <= counter_ints_) return;
  partial_floats_ = std::max(floats, partial_floats_);
  counter_ints_ = std::max(ints, counter_ints_);
  buffer_ = DeviceBuffer((partial_floats_ + counter_ints_) * 4);
  CUDA_CHECK(cudaMemsetAsync(counters(), 0, counter_ints_ * 4, stream));
}

void exl2_gemv(const Exl2Layer& layer, const DeviceView& x, const DeviceView& y,
               Exl2Workspace& workspace, cudaStream_t stream, bool add_bias) {
  constexpr const char* op = "exl2_gemv";
  EXQ_CHECK(!layer.empty(), "cuda exl2_gemv: layer is not uploaded");
  check_dtype_in(x, {DType::F32, DType::F16}, op, "x");
  check_rank(x, 2, op, "x");
  check_dense(x, op, "x");
  EXQ_CHECK(x.dim(1) == layer.in() && x.dim(0) >= 1 && x.dim(0) <= kExl2GemvMaxRows,
            "cuda exl2_gemv: x {} must be [1..{}, {}]", shape_str(x.shape()), kExl2GemvMaxRows,
            layer.in());
  check_dtype(y, DType::F32, op, "y");
  check_shape(y, {x.dim(0), layer.out()}, op, "y");
  check_dense(y, op, "y");
  const Exl2Desc& d = layer.desc();
  EXQ_CHECK(workspace.partial_floats() >= exl2_gemv_partial_floats(d, layer.split()) &&
                workspace.counter_ints() >= exl2_gemv_counter_ints(d),
            "cuda exl2_gemv: workspace was not reserved for this layer");
  const int batch = static_cast<int>(x.dim(0));
  if (x.dtype() == DType::F32)
    exl2_gemv_cuda(d, x.data<float>(), y.data<float>(), batch, add_bias, layer.split(),
                   workspace.partials(), workspace.counters(), stream);
  else
    exl2_gemv_cuda(d, static_cast<const __half*>(x.raw()), y.data<float>(), batch, add_bias,
                   layer.split(), workspace.partials(), workspace.counters(), stream);
}

void exl2_dequantize(const Exl2Layer& layer, const DeviceView& w, cudaStream_t stream) {
  constexpr const char* op = "exl2_dequantize";
  EXQ_CHECK(!layer.empty(), "cuda exl2_dequantize: layer is not uploaded");
  check_dtype(w, DType::F16, op, "w");
  check_shape(w, {layer.out(), layer.in()}, op, "w");
  check_dense(w, op, "w");
  EXQ_CHECK(static_cast<size_t>(layer.in()) <= exl2_dequantize_max_in(),
            "cuda exl2_dequantize: in {} exceeds the supported {}", layer.in(),
            exl2_dequantize_max_in());
  exl2_dequantize_cuda(layer.desc(), static_cast<__half*>(w.raw()), stream);
}

void exl2_matmul(CublasHandle& cublas, const Exl2Layer& layer, const DeviceView& x,
                 const DeviceView& y, Exl2Workspace& workspace, const DeviceView& w_scratch,
                 const DeviceView& matmul_workspace, cudaStream_t stream, bool add_bias) {
  check_rank(x, 2, "exl2_matmul", "x");
  if (x.dim(0) <= kExl2GemvMaxRows && x.dim(0) >= 1) {
    exl2_gemv(layer, x, y, workspace, stream, add_bias);
    return;
  }
  exl2_dequantize(layer, w_scratch, stream);
  matmul(cublas, x, w_scratch, y, matmul_workspace, stream);
  if (add_bias && layer.has_bias())
    exl2_add_bias_cuda(y.data<float>(), layer.desc().bias, static_cast<int>(y.dim(0)),
                       static_cast<int>(layer.out()), stream);
}

}  // namespace exq::cuda
