// Random and fixture EXL2 layers described for both backends, shared by the CUDA EXL2 GEMV tests
// (exl2_gemv_test.cpp, exl2_gemv_launch_test.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "backend/cpu/exl2_matmul.h"
#include "backend/cuda/exl2_gemv.h"
#include "backend/cuda/exl2_plan.h"
#include "core/half.h"
#include "core/tensor.h"
#include "io/exl2.h"

namespace exq::cuda::exl2_test {

// One layer described for both backends (pointers into `t`, which must outlive it).
struct BothLayers {
  std::vector<Exl2HostGroup> groups;
  std::vector<cpu::Exl2MatmulGroup> cpu_groups;
  std::vector<int32_t> perm;
  Exl2HostLayer host;
  cpu::Exl2MatmulWeight cpu;
  Tensor wd;  // f32 [out, in], io's dequantization
  Tensor w2;  // f32 [out, in], kernel 2's weights: exact (q - z) * scale in runs of groups of
              // >= 4 units (its offset decode), io's fp16 values in the others

  BothLayers(const io::Exl2Tensors& t, int64_t in, int64_t out) {
    for (const io::Exl2Group& g : io::validate_exl2(t, in, out, "layer")) {
      groups.push_back({g.bits, g.row_begin, g.rows, g.word_begin});
      cpu_groups.push_back({g.bits, g.row_begin, g.rows, g.word_begin});
    }
    perm.resize(static_cast<size_t>(in));
    for (int64_t i = 0; i < in; ++i) perm[t.q_invperm.data<int32_t>()[i]] = static_cast<int32_t>(i);
    host.in = cpu.in = in;
    host.out = cpu.out = out;
    cpu.out_pad = io::exl2_out_pad(out);
    host.q_weight = cpu.q_weight = reinterpret_cast<const uint32_t*>(t.q_weight.raw());
    host.q_weight_rows = t.q_weight.dim(0);
    host.q_scale = cpu.q_scale = reinterpret_cast<const uint32_t*>(t.q_scale.raw());
    host.q_scale_max = cpu.q_scale_max = t.q_scale_max.data<uint16_t>();
    host.q_perm = cpu.q_perm = perm.data();
    host.groups = groups.data();
    host.num_groups = static_cast<int64_t>(groups.size());
    cpu.groups = cpu_groups.data();
    cpu.num_groups = host.num_groups;
    host.bias = cpu.bias = t.bias.empty() ? nullptr : t.bias.data<uint16_t>();
    wd = io::dequantize_exl2(t, in, out, "layer", DType::F32);
    w2 = Tensor::copy_of(wd.view());
    const io::Exl2Linear lin = io::unpack_exl2(t, in, out, "layer");
    std::vector<bool> offset_decode(lin.groups.size(), false);
    for (const Exl2Segment& seg : exl2_plan(host, "layer").segments)
      if (seg.group_shift >= 2)
        for (int g = seg.first_group; g < seg.first_group + seg.groups; ++g)
          offset_decode[static_cast<size_t>(g)] = true;
    for (size_t g = 0; g < lin.groups.size(); ++g) {
      if (!offset_decode[g]) continue;
      const io::Exl2Group& grp = lin.groups[g];
      const float m = half_to_float(float_to_half(half_to_float(lin.scale_max[g]) / 256.0f));
      const int zero = 1 << (grp.bits - 1);
      for (int64_t r = grp.row_begin; r < grp.row_begin + grp.rows; ++r)
        for (int64_t c = 0; c < out; ++c) {
          const float qs = lin.qs[g * static_cast<size_t>(out) + static_cast<size_t>(c)];
          const float scale = half_to_float(float_to_half(qs * qs * m));
          w2.data<float>()[c * in + lin.perm[static_cast<size_t>(r)]] =
              static_cast<float>(lin.q[static_cast<size_t>(r * out + c)] - zero) * scale;
        }
    }
  }
};

// A random layer from (bits, rows) groups, with random codes, scales and permutation.
inline io::Exl2Linear random_linear(const std::vector<std::pair<int, int64_t>>& bits_rows, int64_t out,
                             bool bias, uint32_t seed) {
  std::mt19937 rng(seed);
  io::Exl2Linear l;
  l.groups = io::exl2_group_table(bits_rows);
  l.in = l.groups.back().row_begin + l.groups.back().rows;
  l.out = out;
  l.q.resize(static_cast<size_t>(l.in * l.out));
  for (const auto& g : l.groups)
    for (int64_t i = g.row_begin * l.out; i < (g.row_begin + g.rows) * l.out; ++i)
      l.q[static_cast<size_t>(i)] = static_cast<uint8_t>(rng() % (1u << g.bits));
  for (size_t i = 0; i < l.groups.size() * static_cast<size_t>(l.out); ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + rng() % 16));
  std::uniform_real_distribution<float> smax(0.002f, 0.08f);
  for (size_t g = 0; g < l.groups.size(); ++g) l.scale_max.push_back(float_to_half(smax(rng)));
  for (int64_t i = 0; i < l.in; ++i) l.perm.push_back(static_cast<int32_t>(i));
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(static_cast<size_t>(l.in));
  for (int64_t i = 0; i < l.in; ++i) l.invperm[static_cast<size_t>(l.perm[i])] = static_cast<int32_t>(i);
  if (bias)
    for (int64_t c = 0; c < l.out; ++c) l.bias.push_back(float_to_half(0.5f * std::sin(float(c))));
  return l;
}

// Uniform groups of `gs` rows (the last one short when in % gs != 0).
inline std::vector<std::pair<int, int64_t>> uniform_groups(int bits, int64_t gs, int64_t in) {
  std::vector<std::pair<int, int64_t>> v;
  for (int64_t r = 0; r < in; r += gs) v.push_back({bits, std::min(gs, in - r)});
  return v;
}

// A random_linear layer packed, described for both backends and uploaded (same layout for one
// bits_rows and out).
struct UploadedLayer {
  io::Exl2Packed packed;
  std::unique_ptr<BothLayers> both;
  Exl2Layer gpu;
};

inline std::unique_ptr<UploadedLayer> upload_random_layer(const std::vector<std::pair<int, int64_t>>& bits_rows,
                                                          int64_t out, uint32_t seed, cudaStream_t stream,
                                                          const char* name) {
  auto l = std::make_unique<UploadedLayer>();
  const io::Exl2Linear lin = random_linear(bits_rows, out, false, seed);
  l->packed = io::pack_exl2(lin);
  l->both = std::make_unique<BothLayers>(l->packed.view(), lin.in, out);
  l->gpu = Exl2Layer(l->both->host, stream, name);
  return l;
}

}  // namespace exq::cuda::exl2_test
