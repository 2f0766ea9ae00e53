#include "io/exl2.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "core/error.h"
#include "core/half.h"
#include "exl2_test_models.h"
#include "test_support.h"

namespace exq::io {
namespace {

std::filesystem::path fixture(const std::string& bpw) { return test::exl2_layer0_fixture(bpw); }
const auto& kLinears = test::smollm2_layer0_linears();

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// fp16 values as an ordered integer line, so |a-b| counts ulps (across zero too).
int32_t ordered(uint16_t h) { return (h & 0x8000) ? -static_cast<int32_t>(h & 0x7fff) : h; }

class Exl2Fixture : public ::testing::TestWithParam<std::string> {};

TEST_P(Exl2Fixture, DequantizesBitExactAndRepacksByteForByte) {
  const SafetensorsFile f = SafetensorsFile::open(fixture(GetParam()));
  int64_t total = 0, differing = 0, beyond_ulp = 0;
  double max_diff = 0.0;
  for (const auto& [name, shape] : kLinears) {
    const std::string key = "model.layers.0." + name;
    ASSERT_TRUE(has_exl2(f, key)) << key;
    const Exl2Tensors t = exl2_tensors(f, key);
    const Exl2Linear layer = unpack_exl2(t, shape.first, shape.second, key);

    const Tensor w = dequantize_exl2(layer, DType::F16);
    const TensorView ref = f.get(key + ".dequant");
    ASSERT_EQ(w.shape(), ref.shape()) << key;
    const uint16_t* a = w.data<uint16_t>();
    const uint16_t* b = ref.data<uint16_t>();
    int64_t layer_diff = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      if (a[i] == b[i]) continue;
      ++layer_diff;
      if (std::abs(ordered(a[i]) - ordered(b[i])) > 1) ++beyond_ulp;
      max_diff = std::max(
          max_diff, static_cast<double>(std::fabs(half_to_float(a[i]) - half_to_float(b[i]))));
    }
    EXPECT_EQ(layer_diff, 0) << key;
    total += ref.numel();
    differing += layer_diff;

    const Tensor w32 = dequantize_exl2(t, shape.first, shape.second, key, DType::F32);
    for (int64_t i = 0; i < w32.numel(); ++i) ASSERT_EQ(w32.data<float>()[i], half_to_float(b[i]));

    const Exl2Packed p = pack_exl2(layer);
    EXPECT_TRUE(same_bytes(p.q_weight, t.q_weight)) << key;
    EXPECT_TRUE(same_bytes(p.q_scale, t.q_scale)) << key;
    EXPECT_TRUE(same_bytes(p.q_scale_max, t.q_scale_max)) << key;
    EXPECT_TRUE(same_bytes(p.q_groups, t.q_groups)) << key;
    EXPECT_TRUE(same_bytes(p.q_invperm, t.q_invperm)) << key;
  }
  EXPECT_EQ(differing, 0);
  EXPECT_EQ(beyond_ulp, 0);
  EXPECT_EQ(max_diff, 0.0);
  RecordProperty("values", std::to_string(total));
  std::printf("[%s bpw] %lld values, %lld differing, %lld beyond 1 ulp, max |diff| %g\n",
              GetParam().c_str(), static_cast<long long>(total), static_cast<long long>(differing),
              static_cast<long long>(beyond_ulp), max_diff);
}

INSTANTIATE_TEST_SUITE_P(Layer0, Exl2Fixture, ::testing::Values("4.0", "2.5"));

// A random layer with every bit width, a short last group, out not a multiple of 32, a bias.
Exl2Linear random_layer(int64_t out, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<std::pair<int, int64_t>> bits_rows = {
      {8, 32}, {6, 32}, {6, 16}, {5, 64}, {4, 128}, {3, 32}, {2, 16}, {2, 48}, {3, 20}};
  Exl2Linear l;
  l.groups = exl2_group_table(bits_rows);
  l.in = l.groups.back().row_begin + l.groups.back().rows;
  l.out = out;
  l.q.resize(static_cast<size_t>(l.in * out));
  for (const Exl2Group& g : l.groups)
    for (int64_t i = g.row_begin * out; i < (g.row_begin + g.rows) * out; ++i)
      l.q[i] = static_cast<uint8_t>(rng() % (1u << g.bits));
  l.qs.resize(l.groups.size() * out);
  for (auto& v : l.qs) v = static_cast<uint8_t>(1 + rng() % 16);
  for (size_t g = 0; g < l.groups.size(); ++g)
    l.scale_max.push_back(float_to_half(0.01f + 0.001f * static_cast<float>(rng() % 100)));
  l.perm.resize(l.in);
  for (int64_t i = 0; i < l.in; ++i) l.perm[i] = static_cast<int32_t>(i);
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(l.in);
  for (int64_t i = 0; i < l.in; ++i) l.invperm[l.perm[i]] = static_cast<int32_t>(i);
  for (int64_t c = 0; c < out; ++c) l.bias.push_back(float_to_half(0.5f * static_cast<float>(c)));
  return l;
}

void expect_same_layer(const Exl2Linear& a, const Exl2Linear& b) {
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (size_t g = 0; g < a.groups.size(); ++g) {
    EXPECT_EQ(a.groups[g].bits, b.groups[g].bits);
    EXPECT_EQ(a.groups[g].rows, b.groups[g].rows);
  }
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.qs, b.qs);
  EXPECT_EQ(a.scale_max, b.scale_max);
  EXPECT_EQ(a.perm, b.perm);
  EXPECT_EQ(a.invperm, b.invperm);
  EXPECT_EQ(a.bias, b.bias);
}

TEST(Exl2, PacksEveryBitWidthAndPadding) {
  for (int64_t out : {40, 64, 1}) {
    const Exl2Linear l = random_layer(out, static_cast<uint32_t>(out));
    const Exl2Packed p = pack_exl2(l);
    EXPECT_EQ(p.q_weight.dim(1), exl2_out_pad(out));
    // 8:32 -> 8 words, 6:32 -> 6, 6:16 -> 3, 5:64 -> 10, 4:128 -> 16, 3:32 -> 3, 2:16 -> 1,
    // 2:48 -> 3, 3:20 -> ceil(60/32) = 2.
    EXPECT_EQ(p.q_weight.dim(0), 8 + 6 + 3 + 10 + 16 + 3 + 1 + 3 + 2);
    const Exl2Linear back = unpack_exl2(p.view(), l.in, out, "rand");
    expect_same_layer(l, back);
    // Padding columns: zero code and scale code 0xF.
    if (out == 40) {
      const auto* qw = reinterpret_cast<const uint32_t*>(p.q_weight.data<int32_t>());
      EXPECT_EQ(qw[63], 0x80808080u);  // first 8-bit word, column 63: four zero codes 128
      EXPECT_EQ(static_cast<uint32_t>(p.q_scale.data<int32_t>()[7]), 0xFFFFFFFFu);
    }
    // Dequantization against the formula, value by value.
    const Tensor w = dequantize_exl2(l, DType::F16);
    for (const Exl2Group& g : l.groups) {
      const float m =
          half_to_float(float_to_half(half_to_float(l.scale_max[&g - &l.groups[0]]) / 256));
      for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r)
        for (int64_t c = 0; c < out; ++c) {
          const float qs = l.qs[(&g - &l.groups[0]) * out + c];
          const float s = half_to_float(float_to_half(qs * qs * m));
          const float v = static_cast<float>(l.q[r * out + c] - (1 << (g.bits - 1))) * s;
          ASSERT_EQ(w.data<uint16_t>()[c * l.in + l.perm[r]], float_to_half(v));
        }
    }
  }
}

TEST(Exl2, RoundTripsThroughSafetensors) {
  const Exl2Linear l = random_layer(40, 7);
  const Exl2Packed p = pack_exl2(l);
  std::vector<NamedTensor> tensors;
  p.append_to(tensors, "blk.proj");
  const auto dir = test::temp_dir("exl2_st");
  write_safetensors(dir / "out.safetensors", tensors);
  const SafetensorsFile f = SafetensorsFile::open(dir / "out.safetensors");
  ASSERT_TRUE(has_exl2(f, "blk.proj"));
  EXPECT_FALSE(has_exl2(f, "blk.other"));
  expect_same_layer(l, unpack_exl2(exl2_tensors(f, "blk.proj"), l.in, 40, "blk.proj"));
  EXPECT_THROW(exl2_tensors(f, "blk.other"), Error);
}

// Owned copies of a fixture layer that a test may corrupt.
struct Corruptible {
  Tensor q_weight, q_scale, q_scale_max, q_groups, q_invperm;
  explicit Corruptible(const Exl2Tensors& t)
      : q_weight(Tensor::copy_of(t.q_weight)),
        q_scale(Tensor::copy_of(t.q_scale)),
        q_scale_max(Tensor::copy_of(t.q_scale_max)),
        q_groups(Tensor::copy_of(t.q_groups)),
        q_invperm(Tensor::copy_of(t.q_invperm)) {}
  Exl2Tensors view() const {
    return {q_weight.view(), q_scale.view(),   q_scale_max.view(),
            q_groups.view(), q_invperm.view(), {}};
  }
};

// Runs unpack and returns the tensor named by the error ("" when nothing was thrown).
std::string failing_tensor(const Exl2Tensors& t, int64_t in, int64_t out) {
  try {
    unpack_exl2(t, in, out, "L");
  } catch (const Error& e) {
    EXPECT_FALSE(e.message().empty());
    return e.context().tensor;
  }
  return "";
}

TEST(Exl2, RejectsInconsistentLayers) {
  const SafetensorsFile f = SafetensorsFile::open(fixture("4.0"));
  const Exl2Tensors good =
      exl2_tensors(f, "model.layers.0.self_attn.k_proj");  // 4b:128 + 3b:128..64
  EXPECT_EQ(failing_tensor(good, 576, 192), "");

  {  // bit width 7
    Corruptible c(good);
    c.q_groups.data<int16_t>()[2] = 7;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // bit width 1 in the last group
    Corruptible c(good);
    c.q_groups.data<int16_t>()[8] = 1;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // group start not consistent with the rows (4-bit group of 15 words)
    Corruptible c(good);
    c.q_groups.data<int16_t>()[3] -= 1;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // starts out of order
    Corruptible c(good);
    c.q_groups.data<int16_t>()[5] = 0;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // group 0 not at 0
    Corruptible c(good);
    c.q_groups.data<int16_t>()[1] = 1;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // 3-bit group relabelled 4-bit: rows no longer add up to in
    Corruptible c(good);
    c.q_groups.data<int16_t>()[2] = 4;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_groups");
  }
  {  // q_invperm with a repeated entry
    Corruptible c(good);
    c.q_invperm.data<int32_t>()[5] = c.q_invperm.data<int32_t>()[6];
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_invperm");
  }
  {  // q_invperm out of range
    Corruptible c(good);
    c.q_invperm.data<int32_t>()[0] = 576;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_invperm");
  }
  {  // q_scale_max not finite
    Corruptible c(good);
    c.q_scale_max.data<uint16_t>()[0] = 0x7c00;
    EXPECT_EQ(failing_tensor(c.view(), 576, 192), "L.q_scale_max");
  }
  // Shapes against the expected [in, out].
  EXPECT_EQ(failing_tensor(good, 575, 192), "L.q_invperm");
  EXPECT_EQ(failing_tensor(good, 576, 160), "L.q_scale");
  {
    Exl2Tensors t = good;
    t.q_scale_max = good.q_scale_max.slice0(0, 4);
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_scale_max");
    t = good;
    t.q_groups = good.q_groups.slice0(0, 9);
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_groups");
    t = good;
    t.q_weight = good.q_weight.slice0(0, 57);  // last group one word short
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_groups");
    t = good;
    t.q_weight = good.q_scale;  // wrong columns
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_weight");
    t = good;
    t.q_invperm = good.q_scale_max;  // wrong dtype
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_invperm");
    t = good;
    t.q_scale = TensorView();
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.q_scale");
    t = good;
    t.bias = good.q_scale_max;  // bias [9] for out 192
    EXPECT_EQ(failing_tensor(t, 576, 192), "L.bias");
  }
  // Unpacked layers are checked before packing.
  Exl2Linear l = unpack_exl2(good, 576, 192, "L");
  l.q[0] = 200;  // exceeds 4 bits
  EXPECT_THROW(pack_exl2(l), Error);
  l = unpack_exl2(good, 576, 192, "L");
  l.qs[3] = 0;
  EXPECT_THROW(pack_exl2(l), Error);
  l = unpack_exl2(good, 576, 192, "L");
  std::swap(l.perm[0], l.perm[1]);
  EXPECT_THROW(dequantize_exl2(l), Error);
  EXPECT_THROW(dequantize_exl2(unpack_exl2(good, 576, 192, "L"), DType::BF16), Error);
}

}  // namespace
}  // namespace exq::io
