#include "backend/cuda/exl2_gemv.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/exl2_plan.h"
#include "backend/cuda/expert_gemm.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/validate.h"
#include "core/error.h"
#include "core/half.h"

namespace exq::cuda {
namespace {

constexpr size_t kSectionAlign = 256;
constexpr size_t kRepackScratch = size_t{32} << 20;

size_t align_up(size_t v) { return (v + kSectionAlign - 1) / kSectionAlign * kSectionAlign; }

bool valid_bits(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

// The split of one launch over layers `ds` (one `in`) for `kernel`; `width`: their common bit
// width (the kernel instance whose occupancy counts), 0 if mixed.
Exl2Split choose_split(const std::vector<const Exl2Desc*>& ds, int width, int kernel) {
  Exl2Desc probe_desc = *ds[0];
  probe_desc.uniform_bits = width;
  int tiles = 0, steps = 0;
  for (const Exl2Desc* d : ds) {
    tiles += d->out_pad / kExl2TileColumns;
    steps = std::max(steps, d->num_steps);
  }
  auto rows = [&](int tpb) {
    int64_t r = 0;
    for (const Exl2Desc* d : ds) r += (d->out_pad / kExl2TileColumns + tpb - 1) / tpb;
    return r;
  };
  // Resident warps per multiprocessor of a 16-warp block (registers).
  Exl2Split probe;
  probe.tiles_per_block = 8;
  probe.ksub = 2;
  probe.steps_per_warp = 1;
  probe.kernel = kernel;
  const int sms = current_multiprocessors();
  const int warps = std::max(1, exl2_gemv_blocks_per_sm(probe_desc, probe)) * 16;
  Exl2Split s = exl2_choose_split(tiles, steps, sms, warps, exl2_gemv_hopper());
  s.kernel = kernel;
  // The fewest tiles per block whose grid is resident in one wave (registers and the shared
  // memory of batch 8); the most when none is.
  for (int tpb = 1; tpb * s.ksub <= kExl2MaxWarps; tpb *= 2) {
    s.tiles_per_block = tpb;
    if (rows(tpb) * s.ksplit <= int64_t{sms} * exl2_gemv_blocks_per_sm(probe_desc, s)) break;
  }
  // Clusters that cannot all be resident at once would wait for each other: partial sums.
  if (s.ksplit > 1 && s.cluster && rows(s.tiles_per_block) > exl2_gemv_max_clusters(probe_desc, s))
    s.cluster = false;
  return s;
}

Exl2Split choose_split(const Exl2Desc& d, int kernel) { return choose_split({&d}, d.uniform_bits, kernel); }

// Kernel 2's split for mixed widths with a run per warp (Exl2Split::runs), from the chooser's
// split (at least 4 warp slices): the same slices made up to 1.5x longer until every layer's
// runs padded to them fit (on the H100 0.1:5b_128g/0.9:4b_128g at 4096x14336 took 12.9 us this
// way, 16.8 us with a fifth warp: exl2_gemv_bench --only runsweep), else warps along K (else
// blocks, else steps per warp) added until they do; partial sums when K is split (no cluster
// check was made). Empty when no such split fits (the caller keeps its split).
std::optional<Exl2Split> choose_runs_split(const std::vector<const Exl2Desc*>& ds) {
  Exl2Split s = choose_split(ds, 0, 2);
  s.runs = true;
  int tiles = 0;
  for (const Exl2Desc* d : ds) tiles += d->out_pad / kExl2TileColumns;
  auto padded = [&] {
    int v = 0;
    for (const Exl2Desc* d : ds) v = std::max(v, exl2_run_steps(*d, s.steps_per_warp));
    return v;
  };
  // Wide launches get at least 4 warp slices per tile column, as many warps a block: Llama-3-8B's
  // gate + up group with exllamav2's MLP row 9 took 28.3 us as 4 slices of 10 steps, 30.8 us as
  // 3 of 16 (the chooser's 2 plus one).
  if (s.ksplit == 1 && s.ksub < 4) {
    int steps = 0;
    for (const Exl2Desc* d : ds) steps = std::max(steps, d->num_steps);
    s.tiles_per_block = std::max(1, s.ksub * s.tiles_per_block / 4);
    s.ksub = 4;
    s.steps_per_warp = (steps + 3) / 4;
  }
  const int spw0 = s.steps_per_warp;
  for (int spw = spw0; 2 * spw <= 3 * spw0 && s.ksub * spw <= kExl2MaxBlockSteps; ++spw) {
    s.steps_per_warp = spw;
    if (s.ksplit * s.ksub * spw >= padded()) break;
  }
  if (s.ksplit * s.ksub * s.steps_per_warp < padded()) s.steps_per_warp = spw0;
  for (int n = 0; s.ksplit * s.ksub * s.steps_per_warp < padded(); ++n) {
    if (n == 64) return std::nullopt;
    if ((s.ksub + 1) * s.tiles_per_block <= kExl2MaxWarps &&
        (s.ksub + 1) * s.steps_per_warp <= kExl2MaxBlockSteps)
      ++s.ksub;
    else if (s.ksplit < kExl2MaxCluster)
      ++s.ksplit;
    else
      ++s.steps_per_warp;
  }
  if (s.ksplit > 1) s.cluster = false;
  if (*exl2_split_problem(s, tiles, padded(), exl2_gemv_hopper()) != 0) return std::nullopt;
  return s;
}

// Mixed-width layers (or groups) that kernel 2 runs take a run per warp when they read >= 4 MB
// (the 8B-shaped decode with exllamav2's options 4.46 -> 2.97 ms per token on the H100; the
// SmolLM2-shaped one, layers < 1 MB, 1.19 -> 1.26 ms with one option row: docs/perf.md), unless
// EXQ_EXL2_GEMV picks a kernel; EXQ_EXL2_MIXED=runs or k1 picks a run per warp or kernel 1
// whatever the size.
constexpr size_t kRunsBytes = size_t{4} << 20;

// The kernel choice's environment, read once: EXQ_EXL2_GEMV (set: v1/1, v2/2 or anything else)
// and EXQ_EXL2_MIXED (runs, k1).
struct GemvEnv {
  bool gemv_set = false, v1 = false, v2 = false, mixed_runs = false, mixed_k1 = false;
};

const GemvEnv& gemv_env() {
  static const GemvEnv e = [] {
    GemvEnv r;
    const auto is = [](const char* v, const char* a) { return v != nullptr && std::strcmp(v, a) == 0; };
    const char* gemv = std::getenv("EXQ_EXL2_GEMV");
    r.gemv_set = gemv != nullptr && *gemv != 0;
    r.v1 = is(gemv, "v1") || is(gemv, "1");
    r.v2 = is(gemv, "v2") || is(gemv, "2");
    const char* mixed = std::getenv("EXQ_EXL2_MIXED");
    r.mixed_runs = is(mixed, "runs");
    r.mixed_k1 = is(mixed, "k1");
    return r;
  }();
  return e;
}

bool runs_by_default(size_t weight_bytes) {
  const GemvEnv& e = gemv_env();
  if (e.gemv_set || e.mixed_k1) return false;
  return e.mixed_runs || weight_bytes >= kRunsBytes;
}

// Kernel 2 for layers of one bit width, where it was faster on the GPU (docs/perf.md: 52.5 %
// vs 46.9 % of 3 TB/s at 4 bits, 4096x14336, H200); kernel 1 for mixed widths, where kernel 2
// was 2-15 % slower, when the layer needs it, or when EXQ_EXL2_GEMV=v1 (or 1) asks for it.
// EXQ_EXL2_GEMV=v2 picks kernel 2 wherever it can run.
int default_kernel(bool kernel2_ok, bool uniform) {
  const GemvEnv& e = gemv_env();
  return !e.v1 && kernel2_ok && (uniform || e.v2) ? 2 : 1;
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
  const Exl2Plan plan = exl2_plan(h, name);
  EXQ_CHECK(plan.tile_rows < (1 << 24), "{}: {} input rows are too many for the CUDA layout",
            name, h.in);
  const int64_t out_pad = (h.out + 31) / 32 * 32;

  // Sections: q_weight (device layout, written by the repack kernel), then one host image of
  // the rest, one copy.
  const size_t qw_bytes = static_cast<size_t>(out_pad / 32) * plan.tile_rows * 128;
  const size_t qs_bytes = static_cast<size_t>(h.num_groups * (out_pad / 8)) * 4;
  const size_t off_qs = align_up(qw_bytes);
  const size_t off_m = off_qs + align_up(qs_bytes);
  const size_t off_units = off_m + align_up(plan.group_m.size() * 2);
  const size_t off_map = off_units + align_up(plan.units.size() * sizeof(Exl2Unit));
  const size_t off_bias = off_map + align_up(plan.x_map.size() * 4);
  // x_pos: the inverse of x_map; x_pad: the staged rows that are no input channel.
  std::vector<int32_t> pad;
  for (size_t i = 0; i < plan.x_map.size(); ++i)
    if (plan.x_map[i] < 0) pad.push_back(static_cast<int32_t>(i));
  const size_t off_pos = off_bias + align_up(h.bias ? static_cast<size_t>(h.out) * 2 : 0);
  const size_t off_pad = off_pos + align_up(static_cast<size_t>(h.in) * 4);
  const size_t total = off_pad + pad.size() * 4;
  std::vector<uint8_t> image(total - off_qs, 0);
  auto at = [&](size_t off) { return image.data() + (off - off_qs); };
  std::memcpy(at(off_qs), h.q_scale, qs_bytes);
  std::memcpy(at(off_m), plan.group_m.data(), plan.group_m.size() * 2);
  std::memcpy(at(off_units), plan.units.data(), plan.units.size() * sizeof(Exl2Unit));
  std::memcpy(at(off_map), plan.x_map.data(), plan.x_map.size() * 4);
  if (h.bias) std::memcpy(at(off_bias), h.bias, static_cast<size_t>(h.out) * 2);
  auto* pos = reinterpret_cast<int32_t*>(at(off_pos));
  for (size_t i = 0; i < plan.x_map.size(); ++i)
    if (plan.x_map[i] >= 0) pos[plan.x_map[i]] = static_cast<int32_t>(i);
  if (!pad.empty()) std::memcpy(at(off_pad), pad.data(), pad.size() * 4);
  buffer_ = DeviceBuffer(total);
  auto* base = static_cast<uint8_t*>(buffer_.data());
  CUDA_CHECK(cudaMemcpyAsync(base + off_qs, image.data(), image.size(), cudaMemcpyHostToDevice, stream));

  desc_.q_weight = reinterpret_cast<const uint4*>(base);
  desc_.q_scale = reinterpret_cast<const uint32_t*>(base + off_qs);
  desc_.group_m = reinterpret_cast<const __half*>(base + off_m);
  desc_.units = reinterpret_cast<const Exl2Unit*>(base + off_units);
  desc_.x_map = reinterpret_cast<const int32_t*>(base + off_map);
  desc_.bias = h.bias ? reinterpret_cast<const __half*>(base + off_bias) : nullptr;
  x_pos_ = reinterpret_cast<const int32_t*>(base + off_pos);
  x_pad_ = reinterpret_cast<const int32_t*>(base + off_pad);
  x_pad_count_ = static_cast<int>(pad.size());
  // The prefill's dequantization in q_perm order: q_perm and each unit's first row in that
  // order, in an allocation of their own (the decode never reads them).
  std::vector<int32_t> prefill(static_cast<size_t>(h.in) + plan.unit_krow.size());
  std::copy(h.q_perm, h.q_perm + h.in, prefill.begin());
  std::copy(plan.unit_krow.begin(), plan.unit_krow.end(), prefill.begin() + h.in);
  prefill_buffer_ = DeviceBuffer(prefill.size() * 4);
  CUDA_CHECK(cudaMemcpyAsync(prefill_buffer_.data(), prefill.data(), prefill.size() * 4,
                             cudaMemcpyHostToDevice, stream));
  q_perm_ = static_cast<const int32_t*>(prefill_buffer_.data());
  unit_krow_ = q_perm_ + h.in;
  desc_.in = static_cast<int>(h.in);
  desc_.out = static_cast<int>(h.out);
  desc_.out_pad = static_cast<int>(out_pad);
  desc_.num_units = static_cast<int>(plan.units.size());
  desc_.num_steps = plan.num_steps;
  desc_.tile_rows = plan.tile_rows;
  desc_.num_groups = static_cast<int>(h.num_groups);
  desc_.uniform_bits = plan.uniform_bits;
  desc_.num_segments = static_cast<int>(plan.segments.size());
  std::copy(plan.segments.begin(), plan.segments.end(), desc_.segments);
  expert_gemm_ok_ = h.bias == nullptr && expert_gemm_exl2_ok(desc_, plan.units.data(), plan.unit_krow.data());

  // q_weight through a bounded scratch: consecutive units whose source rows fit it.
  const size_t row_bytes = static_cast<size_t>(out_pad) * 4;
  const size_t scratch_rows =
      std::min<size_t>(static_cast<size_t>(h.q_weight_rows),
                       std::max<size_t>(8, kRepackScratch / row_bytes));
  DeviceBuffer scratch(scratch_rows * row_bytes);
  auto words_of = [&](const Exl2Unit& u) {
    return static_cast<int64_t>(((u.info >> 8 & 0xff) * (u.info & 0xff) + 31) / 32);
  };
  for (size_t u0 = 0; u0 < plan.units.size();) {
    const int64_t row0 = plan.units[u0].src_word;
    size_t u1 = u0;
    while (u1 < plan.units.size() &&
           plan.units[u1].src_word + words_of(plan.units[u1]) - row0 <=
               static_cast<int64_t>(scratch_rows))
      ++u1;
    const int64_t rows = plan.units[u1 - 1].src_word + words_of(plan.units[u1 - 1]) - row0;
    CUDA_CHECK(cudaMemcpyAsync(scratch.data(), h.q_weight + static_cast<size_t>(row0) * out_pad,
                               static_cast<size_t>(rows) * row_bytes, cudaMemcpyHostToDevice, stream));
    exl2_repack_cuda(desc_, scratch.as<uint32_t>(), static_cast<int>(row0), static_cast<int>(u0),
                     static_cast<int>(u1), const_cast<uint4*>(desc_.q_weight), stream);
    u0 = u1;
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));

  // Kernel 2's decode needs finite scales (exl2_layout.h, fma_mant).
  kernel2_ok_ = exl2_gemv2_supports(desc_);
  for (const uint16_t m : plan.group_m) kernel2_ok_ = kernel2_ok_ && (m & 0x7c00u) != 0x7c00u;
  split_ = choose_split(desc_, default_kernel(kernel2_ok_, desc_.uniform_bits != 0));
  weight_bytes_ = static_cast<size_t>(h.q_weight_rows * out_pad) * 4 + qs_bytes +
                  static_cast<size_t>(h.num_groups) * (2 + 4);
  if (kernel2_ok_ && desc_.uniform_bits == 0 && runs_by_default(weight_bytes_)) set_runs();
}

bool Exl2Layer::set_runs() {
  EXQ_CHECK(kernel2_ok_ && desc_.uniform_bits == 0,
            "cuda exl2: a run per warp is for mixed-width layers that GEMV kernel 2 runs");
  const std::optional<Exl2Split> s = choose_runs_split({&desc_});
  if (s) split_ = *s;
  return s.has_value();
}

void Exl2Layer::set_kernel(int kernel) {
  EXQ_CHECK(kernel == 1 || (kernel == 2 && kernel2_ok_),
            "cuda exl2: GEMV kernel {} cannot run this layer (kernel 2 needs groups of a "
            "power-of-two number of 32-row units and finite scales)",
            kernel);
  split_ = choose_split(desc_, kernel);
}

void Exl2Layer::set_split(const Exl2Split& split) {
  EXQ_CHECK(split.kernel == 1 || (split.kernel == 2 && kernel2_ok_),
            "cuda exl2: GEMV kernel {} cannot run this layer", split.kernel);
  EXQ_CHECK(!split.runs || (split.kernel == 2 && desc_.uniform_bits == 0),
            "cuda exl2: a split with a run per warp is for mixed widths on GEMV kernel 2");
  const int steps = exl2_split_steps(desc_, split);
  const char* problem = exl2_split_problem(split, desc_.out_pad / kExl2TileColumns, steps,
                                           exl2_gemv_hopper());
  EXQ_CHECK(*problem == 0,
            "cuda exl2: split (ksplit {}, ksub {}, tiles_per_block {}, steps_per_warp {}) does "
            "not fit {} steps: {}",
            split.ksplit, split.ksub, split.tiles_per_block, split.steps_per_warp,
            desc_.num_steps, problem);
  split_ = split;
}

Exl2LayerGroup::Exl2LayerGroup(std::vector<const Exl2Layer*> layers, const char* name)
    : layers_(std::move(layers)) {
  EXQ_CHECK(!layers_.empty() && layers_.size() <= static_cast<size_t>(kExl2MaxGroup),
            "{}: a group holds 1 to {} layers, got {}", name, kExl2MaxGroup, layers_.size());
  for (const Exl2Layer* l : layers_) {
    EXQ_CHECK(l != nullptr && !l->empty(), "{}: a layer is not uploaded", name);
    EXQ_CHECK(l->in() == layers_[0]->in(), "{}: layers take {} and {} inputs, expected one size",
              name, layers_[0]->in(), l->in());
  }
  width_ = layers_[0]->desc().uniform_bits;
  bool kernel2 = true;
  for (const Exl2Layer* l : layers_) {
    if (l->desc().uniform_bits != width_) width_ = 0;
    kernel2 = kernel2 && l->kernel2_ok();
  }
  set_kernel(default_kernel(kernel2, width_ != 0));
  size_t bytes = 0;
  for (const Exl2Layer* l : layers_) bytes += l->weight_bytes();
  if (kernel2 && width_ == 0 && runs_by_default(bytes)) set_runs();
}

bool Exl2LayerGroup::set_runs() {
  std::vector<const Exl2Desc*> ds;
  for (const Exl2Layer* l : layers_) {
    EXQ_CHECK(l->kernel2_ok(), "cuda exl2: a run per warp needs GEMV kernel 2 for every layer");
    ds.push_back(&l->desc());
  }
  EXQ_CHECK(width_ == 0, "cuda exl2: a run per warp is for groups of mixed widths");
  const std::optional<Exl2Split> s = choose_runs_split(ds);
  if (s) split_ = *s;
  return s.has_value();
}

void Exl2LayerGroup::set_kernel(int kernel) {
  std::vector<const Exl2Desc*> ds;
  for (const Exl2Layer* l : layers_) {
    EXQ_CHECK(kernel == 1 || (kernel == 2 && l->kernel2_ok()),
              "cuda exl2: GEMV kernel {} cannot run every layer of this group", kernel);
    ds.push_back(&l->desc());
  }
  split_ = choose_split(ds, width_, kernel);
}

void Exl2LayerGroup::set_split(const Exl2Split& split) {
  int steps = 0, tiles = 0;
  for (const Exl2Layer* l : layers_) {
    EXQ_CHECK(split.kernel == 1 || (split.kernel == 2 && l->kernel2_ok()),
              "cuda exl2: GEMV kernel {} cannot run every layer of this group", split.kernel);
    steps = std::max(steps, exl2_split_steps(l->desc(), split));
    tiles += l->desc().out_pad / kExl2TileColumns;
  }
  EXQ_CHECK(!split.runs || (split.kernel == 2 && width_ == 0),
            "cuda exl2: a split with a run per warp is for mixed widths on GEMV kernel 2");
  const char* problem = exl2_split_problem(split, tiles, steps, exl2_gemv_hopper());
  EXQ_CHECK(*problem == 0, "cuda exl2: split (ksplit {}, ksub {}, tiles_per_block {}, "
            "steps_per_warp {}) does not fit {} steps: {}", split.ksplit, split.ksub,
            split.tiles_per_block, split.steps_per_warp, steps, problem);
  split_ = split;
}

bool Exl2Workspace::fits(const Exl2Desc& d, const Exl2Split& split) const {
  return exl2_gemv_xq_words(d) <= xq_words_ && exl2_gemv_xscale_floats(d) <= xscale_floats_ &&
         exl2_gemv_partial_floats(d, split) <= partial_floats_;
}

bool Exl2Workspace::fits(const Exl2Layer& layer) const { return fits(layer.desc(), layer.split()); }

bool Exl2Workspace::fits(const Exl2LayerGroup& group) const {
  for (const Exl2Layer* l : group.layers())
    if (!fits(l->desc(), group.split())) return false;
  return true;
}

void Exl2Workspace::grow(const Exl2Desc& d, const Exl2Split& split) {
  xq_words_ = std::max(xq_words_, exl2_gemv_xq_words(d));
  xscale_floats_ = std::max(xscale_floats_, exl2_gemv_xscale_floats(d));
  partial_floats_ = std::max(partial_floats_, exl2_gemv_partial_floats(d, split));
}

void Exl2Workspace::allocate() {
  // Per region: xq words first (16-byte vectors), then scales and partials.
  xq_words_ = (xq_words_ + 3) / 4 * 4;
  xscale_floats_ = (xscale_floats_ + 3) / 4 * 4;
  buffer_ = DeviceBuffer((xq_words_ + xscale_floats_ + partial_floats_) * 4 * kExl2MaxGroup);
}

void Exl2Workspace::reserve(const Exl2Layer& layer, cudaStream_t stream) {
  (void)stream;
  if (fits(layer)) return;
  grow(layer.desc(), layer.split());
  allocate();
}

void Exl2Workspace::reserve(const Exl2LayerGroup& group, cudaStream_t stream) {
  (void)stream;
  if (fits(group)) return;
  for (const Exl2Layer* l : group.layers()) grow(l->desc(), group.split());
  allocate();
}

Exl2Scratch Exl2Workspace::scratch(int i) const {
  auto* base = buffer_.as<uint32_t>() +
               static_cast<size_t>(i) * (xq_words_ + xscale_floats_ + partial_floats_);
  Exl2Scratch sc;
  sc.xq = base;
  sc.xscale = reinterpret_cast<float*>(base + xq_words_);
  sc.partials = sc.xscale + xscale_floats_;
  return sc;
}

namespace {

void check_gemv_io(int64_t in, const DeviceView& x, const char* op) {
  check_rank(x, 2, op, "x");
  check_dense(x, op, "x");
  EXQ_CHECK(x.dim(1) == in && x.dim(0) >= 1 && x.dim(0) <= kExl2GemvMaxRows,
            "cuda {}: x {} must be [1..{}, {}]", op, shape_str(x.shape()), kExl2GemvMaxRows, in);
}

void check_y(const Exl2Layer& layer, int64_t rows, const DeviceView& y, const char* op) {
  check_dtype(y, DType::F32, op, "y");
  check_shape(y, {rows, layer.out()}, op, "y");
  check_dense(y, op, "y");
}

// One layer: a group of one with the layer's own split.
void run_layer(const Exl2Layer& layer, const Exl2Input& in, const DeviceView& y,
               Exl2Workspace& workspace, cudaStream_t stream, bool add_bias, const char* op,
               const int64_t* shift = nullptr) {
  EXQ_CHECK(workspace.fits(layer), "cuda {}: workspace was not reserved for this layer", op);
  EXQ_CHECK(shift == nullptr || (layer.split().kernel == 2 && !layer.has_bias()),
            "cuda {}: a shifted (MoE expert) launch needs GEMV kernel 2 and no bias", op);
  const Exl2Scratch sc = workspace.scratch(0);
  float* yp = y.data<float>();
  const Exl2Desc& d = layer.desc();
  exl2_gemv_cuda(&d, 1, d.uniform_bits, in, &yp, add_bias, layer.split(), &sc, stream,
                 shift != nullptr ? &shift : nullptr);
}

}  // namespace

void exl2_gemv(const Exl2Layer& layer, const DeviceView& x, const DeviceView& y,
               Exl2Workspace& workspace, cudaStream_t stream, bool add_bias) {
  constexpr const char* op = "exl2_gemv";
  EXQ_CHECK(!layer.empty(), "cuda exl2_gemv: layer is not uploaded");
  check_dtype_in(x, {DType::F32, DType::F16}, op, "x");
  check_gemv_io(layer.in(), x, op);
  check_y(layer, x.dim(0), y, op);
  Exl2Input in;
  in.x = x.raw();
  in.f32 = x.dtype() == DType::F32;
  in.batch = static_cast<int>(x.dim(0));
  run_layer(layer, in, y, workspace, stream, add_bias, op);
}

void exl2_gemv_staged(const Exl2Layer& layer, const DeviceView& y, Exl2Workspace& workspace,
                      cudaStream_t stream, bool add_bias) {
  constexpr const char* op = "exl2_gemv_staged";
  EXQ_CHECK(!layer.empty(), "cuda exl2_gemv_staged: layer is not uploaded");
  check_y(layer, 1, y, op);
  Exl2Input in;
  in.staged = true;
  run_layer(layer, in, y, workspace, stream, add_bias, op);
}

void exl2_gemv_swiglu(const Exl2Layer& layer, const DeviceView& gate, const DeviceView& up,
                      const DeviceView& y, Exl2Workspace& workspace, cudaStream_t stream,
                      bool add_bias, bool gelu, const int64_t* shift) {
  constexpr const char* op = "exl2_gemv_swiglu";
  EXQ_CHECK(!layer.empty(), "cuda exl2_gemv_swiglu: layer is not uploaded");
  check_dtype(gate, DType::F32, op, "gate");
  check_dtype(up, DType::F32, op, "up");
  check_gemv_io(layer.in(), gate, op);
  check_shape(up, gate.shape(), op, "up");
  check_dense(up, op, "up");
  check_y(layer, gate.dim(0), y, op);
  Exl2Input in;
  in.x = gate.raw();
  in.up = up.data<float>();
  in.gelu = gelu;
  in.batch = static_cast<int>(gate.dim(0));
  run_layer(layer, in, y, workspace, stream, add_bias, op, shift);
}

void exl2_gemv_group(const Exl2LayerGroup& group, const DeviceView& x,
                     const std::vector<DeviceView>& ys, Exl2Workspace& workspace,
                     cudaStream_t stream, bool add_bias, const std::vector<const int64_t*>& shifts) {
  constexpr const char* op = "exl2_gemv_group";
  EXQ_CHECK(!group.empty(), "cuda exl2_gemv_group: empty group");
  check_dtype_in(x, {DType::F32, DType::F16}, op, "x");
  check_gemv_io(group.in(), x, op);
  const auto n = static_cast<int>(group.layers().size());
  EXQ_CHECK(static_cast<int>(ys.size()) == n, "cuda {}: {} outputs for {} layers", op, ys.size(), n);
  EXQ_CHECK(workspace.fits(group), "cuda {}: workspace was not reserved for this group", op);
  Exl2Desc d[kExl2MaxGroup];
  float* y[kExl2MaxGroup];
  Exl2Scratch sc[kExl2MaxGroup];
  for (int i = 0; i < n; ++i) {
    const Exl2Layer& layer = *group.layers()[static_cast<size_t>(i)];
    check_y(layer, x.dim(0), ys[static_cast<size_t>(i)], op);
    d[i] = layer.desc();
    y[i] = ys[static_cast<size_t>(i)].data<float>();
    sc[i] = workspace.scratch(i);
  }
  EXQ_CHECK(shifts.empty() || static_cast<int>(shifts.size()) == n, "cuda {}: {} shifts for {} layers", op,
            shifts.size(), n);
  for (int i = 0; i < n && !shifts.empty(); ++i)
    EXQ_CHECK(group.split().kernel == 2 && !group.layers()[static_cast<size_t>(i)]->has_bias(),
              "cuda {}: a shifted (MoE expert) launch needs GEMV kernel 2 and no bias", op);
  Exl2Input in;
  in.x = x.raw();
  in.f32 = x.dtype() == DType::F32;
  in.batch = static_cast<int>(x.dim(0));
  exl2_gemv_cuda(d, n, group.width(), in, y, add_bias, group.split(), sc, stream,
                 shifts.empty() ? nullptr : shifts.data());
}

void exl2_dequantize_permuted(const Exl2Layer& layer, const DeviceView& w, cudaStream_t stream) {
  constexpr const char* op = "exl2_dequantize_permuted";
  EXQ_CHECK(!layer.empty(), "cuda exl2_dequantize_permuted: layer is not uploaded");
  check_dtype(w, DType::F16, op, "w");
  check_shape(w, {layer.out(), layer.in()}, op, "w");
  check_dense(w, op, "w");
  exl2_dequantize_permuted_cuda(layer.desc(), layer.unit_krow(), static_cast<__half*>(w.raw()),
                                stream);
}

void exl2_matmul(CublasHandle& cublas, const Exl2Layer& layer, const DeviceView& x,
                 const DeviceView& y, Exl2Workspace& workspace, const DeviceView& w_scratch,
                 const DeviceView& matmul_workspace, cudaStream_t stream, bool add_bias,
                 const DeviceView* up, bool gelu) {
  check_rank(x, 2, "exl2_matmul", "x");
  if (x.dim(0) <= kExl2GemvMaxRows && x.dim(0) >= 1) {
    if (up != nullptr) exl2_gemv_swiglu(layer, x, *up, y, workspace, stream, add_bias, gelu);
    else exl2_gemv(layer, x, y, workspace, stream, add_bias);
    return;
  }
  exl2_dequantize_permuted(layer, w_scratch, stream);
  matmul(cublas, x, w_scratch, y, matmul_workspace, stream, layer.q_perm(), up, gelu);
  if (add_bias && layer.has_bias())
    exl2_add_bias_cuda(y.data<float>(), layer.desc().bias, static_cast<int>(y.dim(0)),
                       static_cast<int>(layer.out()), stream);
}

}  // namespace exq::cuda
