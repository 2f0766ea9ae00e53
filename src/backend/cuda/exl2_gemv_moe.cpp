// The grouped MoE launch of exl2_gemv.h: the routed experts of one layer (one plan, a device-side
// byte shift each) through one staging launch, one GEMV and, where the split sums partials, one
// reduce; and the layout check that lets experts share a plan.
#include "backend/cuda/exl2_gemv.h"

#include <cstring>

#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

// One (layer, slot) region of exl2_gemv_moe's scratch: xq at batch stride 1, the scales, then
// (K split without clusters) the partial sums [ksplit][out_pad].
size_t moe_xq_words(const Exl2Desc& d) { return (exl2_gemv_xq_words(d) / kExl2MaxBatch + 3) / 4 * 4; }
size_t moe_xscale_words(const Exl2Desc& d) { return (exl2_gemv_xscale_floats(d) + 3) / 4 * 4; }
bool moe_partials(const Exl2Split& s) { return s.ksplit > 1 && !s.cluster; }
size_t moe_region_words(const Exl2Desc& d, const Exl2Split& s) {
  const size_t partials = moe_partials(s) ? static_cast<size_t>(s.ksplit) * d.out_pad : 0;
  return moe_xq_words(d) + moe_xscale_words(d) + (partials + 3) / 4 * 4;
}

}  // namespace

bool exl2_moe_grouped(const Exl2LayerGroup& group, int slots) {
  const Exl2Split& s = group.split();
  if (group.empty() || group.layers().size() > static_cast<size_t>(kExl2MoeMaxLayers) || slots < 1 ||
      slots > kExl2MoeMaxSlots || s.kernel != 2)
    return false;
  for (const Exl2Layer* l : group.layers())
    if (l->has_bias()) return false;
  return true;
}

size_t exl2_moe_scratch_bytes(const Exl2LayerGroup& group, int slots) {
  size_t words = 0;
  for (const Exl2Layer* l : group.layers())
    words += static_cast<size_t>(slots) * moe_region_words(l->desc(), group.split());
  return words * 4;
}

void exl2_gemv_moe(const Exl2LayerGroup& group, int slots, const DeviceView& x, const DeviceView* up,
                   const std::vector<DeviceView>& ys, const int64_t* shifts, int stride,
                   void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  constexpr const char* op = "exl2_gemv_moe";
  EXQ_CHECK(exl2_moe_grouped(group, slots), "cuda {}: the grouped MoE launch cannot run this group at {} slots",
            op, slots);
  const auto n = static_cast<int>(group.layers().size());
  EXQ_CHECK(static_cast<int>(ys.size()) == n, "cuda {}: {} outputs for {} layers", op, ys.size(), n);
  EXQ_CHECK(shifts != nullptr && stride >= n, "cuda {}: needs shifts, {} per slot", op, n);
  EXQ_CHECK(scratch_bytes >= exl2_moe_scratch_bytes(group, slots), "cuda {}: scratch of {} bytes, needs {}", op,
            scratch_bytes, exl2_moe_scratch_bytes(group, slots));
  const int64_t rows = up != nullptr ? slots : 1;
  check_dtype(x, DType::F32, op, "x");
  check_shape(x, {rows, group.in()}, op, "x");
  check_dense(x, op, "x");
  if (up != nullptr) {
    check_dtype(*up, DType::F32, op, "up");
    check_shape(*up, x.shape(), op, "up");
    check_dense(*up, op, "up");
  }
  Exl2MoeGroup g;
  g.count = n;
  g.slots = slots;
  const float* xs[kExl2MoeMaxLayers * kExl2MoeMaxSlots];
  const float* ups[kExl2MoeMaxLayers * kExl2MoeMaxSlots];
  auto* region = static_cast<uint32_t*>(scratch);
  const int tpb = group.split().tiles_per_block;
  for (int l = 0; l < n; ++l) {
    const Exl2Layer& layer = *group.layers()[static_cast<size_t>(l)];
    const DeviceView& y = ys[static_cast<size_t>(l)];
    check_dtype(y, DType::F32, op, "y");
    check_shape(y, {slots, layer.out()}, op, "y");
    check_dense(y, op, "y");
    g.d[l] = layer.desc();
    g.rows[l] = (layer.desc().out_pad / kExl2TileColumns + tpb - 1) / tpb;
    for (int s = 0; s < slots; ++s) {
      Exl2LayerIo& io = g.io[l][s];
      io.xq = region;
      io.xscale = reinterpret_cast<const float*>(region + moe_xq_words(layer.desc()));
      if (moe_partials(group.split()))
        io.partials = reinterpret_cast<float*>(region + moe_xq_words(layer.desc()) + moe_xscale_words(layer.desc()));
      io.y = y.data<float>() + static_cast<size_t>(s) * layer.out();
      io.shift = shifts + static_cast<ptrdiff_t>(s) * stride + l;
      region += moe_region_words(layer.desc(), group.split());
      const int e = l * slots + s;
      xs[e] = x.data<float>() + (up != nullptr ? static_cast<size_t>(s) * group.in() : 0);
      ups[e] = up != nullptr ? up->data<float>() + static_cast<size_t>(s) * group.in() : nullptr;
    }
  }
  exl2_moe_prep_cuda(g, xs, up != nullptr ? ups : nullptr, stream);
  exl2_gemv2_moe_launch(g, group.width(), group.split(), stream);
  if (moe_partials(group.split())) exl2_moe_reduce_cuda(g, group.split().ksplit, stream);
}

bool exl2_same_layout(const Exl2Layer& a, const Exl2Layer& b) {
  if (a.empty() || b.empty() || a.has_bias() || b.has_bias() || !a.kernel2_ok() || !b.kernel2_ok() ||
      a.device_bytes() != b.device_bytes())
    return false;
  const Exl2Desc &x = a.desc(), &y = b.desc();
  const auto off = [](const Exl2Desc& d, const void* p) {
    return reinterpret_cast<const char*>(p) - reinterpret_cast<const char*>(d.q_weight);
  };
  return x.in == y.in && x.out == y.out && x.out_pad == y.out_pad && x.num_units == y.num_units &&
         x.num_steps == y.num_steps && x.tile_rows == y.tile_rows && x.num_groups == y.num_groups &&
         x.uniform_bits == y.uniform_bits && x.num_segments == y.num_segments &&
         std::memcmp(x.segments, y.segments, sizeof(Exl2Segment) * static_cast<size_t>(x.num_segments)) == 0 &&
         off(x, x.q_scale) == off(y, y.q_scale) && off(x, x.group_m) == off(y, y.group_m) &&
         off(x, x.units) == off(y, y.units) && off(x, x.x_map) == off(y, y.x_map);
}

}  // namespace exq::cuda
