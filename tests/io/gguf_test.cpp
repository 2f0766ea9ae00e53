#include "io/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "gguf_builder.h"
#include "io/gguf_import.h"
#include "test_support.h"

namespace exq::io {
namespace fs = std::filesystem;
using test::GgufBuilder;

namespace {

GgufFile parse_str(const std::string& s) {
  return GgufFile::parse(
      MappedFile::from_bytes(std::vector<uint8_t>(s.begin(), s.end()), "mem.gguf"));
}

template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle, const std::string& tensor = {}) {
  try {
    fn();
    ADD_FAILURE() << "expected Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_FALSE(e.context().file.empty()) << e.what();
    if (!tensor.empty()) {
      EXPECT_EQ(e.context().tensor, tensor) << e.what();
    }
  }
}

std::vector<float> as_floats(const Tensor& t) {
  std::vector<float> out;
  for (uint16_t h : t.span<uint16_t>()) out.push_back(half_to_float(h));
  return out;
}

}  // namespace

TEST(Gguf, ParsesEveryValueType) {
  GgufBuilder b;
  b.kv<uint8_t>("u8", GgufBuilder::U8, 200);
  b.kv<int8_t>("i8", GgufBuilder::I8, -100);
  b.kv<uint16_t>("u16", GgufBuilder::U16, 60000);
  b.kv<int16_t>("i16", GgufBuilder::I16, -30000);
  b.kv<uint32_t>("u32", GgufBuilder::U32, 4000000000u);
  b.kv<int32_t>("i32", GgufBuilder::I32, -2000000000);
  b.kv<float>("f32", GgufBuilder::F32, 1.5f);
  b.kv<uint8_t>("bool", GgufBuilder::BOOL, 1);
  b.kv<uint64_t>("u64", GgufBuilder::U64, 1ull << 40);
  b.kv<int64_t>("i64", GgufBuilder::I64, -(1ll << 40));
  b.kv<double>("f64", GgufBuilder::F64, 0.25);
  b.kv_str("str", "hello");
  b.kv_strs("strs", {"a", "", "ccc"});
  b.kv_i32s("ints", {1, -2, 3});
  std::string nested;  // array of 2 arrays of uint16
  GgufBuilder::put<uint32_t>(nested, GgufBuilder::ARR);
  GgufBuilder::put<uint32_t>(nested, GgufBuilder::ARR);
  GgufBuilder::put<uint64_t>(nested, 2);
  for (int k = 0; k < 2; ++k) {
    GgufBuilder::put<uint32_t>(nested, GgufBuilder::U16);
    GgufBuilder::put<uint64_t>(nested, 2);
    GgufBuilder::put<uint16_t>(nested, static_cast<uint16_t>(10 * k));
    GgufBuilder::put<uint16_t>(nested, static_cast<uint16_t>(10 * k + 1));
  }
  b.kv_raw("nested", nested);
  b.version = 2;
  const GgufFile g = parse_str(b.build());
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.metadata().size(), 15u);
  EXPECT_EQ(g.metadata()[0].first, "u8");
  EXPECT_EQ(g.get_int("u8"), 200);
  EXPECT_EQ(g.get_int("i8"), -100);
  EXPECT_EQ(g.get_int("u16"), 60000);
  EXPECT_EQ(g.get_int("i16"), -30000);
  EXPECT_EQ(g.get_int("u32"), 4000000000ll);
  EXPECT_EQ(g.get_int("i32"), -2000000000);
  EXPECT_EQ(g.get_double("f32"), 1.5);
  EXPECT_TRUE(g.get_bool_or("bool", false));
  EXPECT_EQ(g.get_int("u64"), 1ll << 40);
  EXPECT_EQ(g.get_int("i64"), -(1ll << 40));
  EXPECT_EQ(g.get_double("f64"), 0.25);
  EXPECT_EQ(g.get_string("str"), "hello");
  EXPECT_EQ(g.at("strs").as_strings(), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(g.at("ints").as_ints(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g.at("nested").size(), 2u);
  EXPECT_EQ(g.at("nested")[1].as_ints(), (std::vector<int64_t>{10, 11}));
  EXPECT_EQ(g.at("strs").describe(), "[string x 3]");
  EXPECT_EQ(g.get_int_or("absent", 7), 7);
  expect_error([&] { g.get_int("str"); }, "metadata 'str': expected an integer");
  expect_error([&] { g.get_string("absent"); }, "missing metadata key 'absent'");
  EXPECT_TRUE(g.tensors().empty());
}

TEST(Gguf, DequantizesEverySupportedType) {
  GgufBuilder b;
  std::string f32, f16, bf16, q8, q4_0, q4_1;
  for (int i = 0; i < 32; ++i) {
    GgufBuilder::put<float>(f32, 0.1f * static_cast<float>(i) - 1.0f);
    GgufBuilder::put<uint16_t>(f16, float_to_half(0.5f * static_cast<float>(i)));
    GgufBuilder::put<uint16_t>(bf16, float_to_bf16(1.0f / static_cast<float>(i + 1)));
  }
  GgufBuilder::put<uint16_t>(q8, float_to_half(0.5f));
  for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(i - 16));
  GgufBuilder::put<uint16_t>(q4_0, float_to_half(0.25f));
  for (int i = 0; i < 16; ++i) q4_0.push_back(static_cast<char>(i | ((15 - i) << 4)));
  GgufBuilder::put<uint16_t>(q4_1, float_to_half(0.125f));
  GgufBuilder::put<uint16_t>(q4_1, float_to_half(-1.0f));
  for (int i = 0; i < 16; ++i) q4_1.push_back(static_cast<char>(i | ((15 - i) << 4)));
  b.tensor("f32", {32}, 0, f32);
  b.tensor("f16", {16, 2}, 1, f16);
  b.tensor("bf16", {32}, 30, bf16);
  b.tensor("q8", {32}, 8, q8);
  b.tensor("q4_0", {32}, 2, q4_0);
  b.tensor("q4_1", {32}, 3, q4_1);
  const GgufFile g = parse_str(b.build());
  EXPECT_EQ(g.tensor("f16").hf_shape(), (Shape{2, 16}));
  const auto f = as_floats(g.dequantize_f16(g.tensor("f32")));
  const auto h = as_floats(g.dequantize_f16(g.tensor("f16")));
  const auto bf = as_floats(g.dequantize_f16(g.tensor("bf16")));
  const auto q8v = as_floats(g.dequantize_f16(g.tensor("q8")));
  const auto q40 = as_floats(g.dequantize_f16(g.tensor("q4_0")));
  const auto q41 = as_floats(g.dequantize_f16(g.tensor("q4_1")));
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(f[i], half_to_float(float_to_half(0.1f * static_cast<float>(i) - 1.0f)));
    EXPECT_EQ(h[i], 0.5f * static_cast<float>(i));
    EXPECT_EQ(bf[i], half_to_float(float_to_half(
                         bf16_to_float(float_to_bf16(1.0f / static_cast<float>(i + 1))))));
    EXPECT_EQ(q8v[i], 0.5f * static_cast<float>(i - 16));
    // Low nibbles hold values 0..15, high nibbles 16..31.
    const int nib = i < 16 ? i : 15 - (i - 16);
    EXPECT_EQ(q40[i], 0.25f * static_cast<float>(nib - 8)) << i;
    EXPECT_EQ(q41[i], 0.125f * static_cast<float>(nib) - 1.0f) << i;
  }
}

// The Q4_1 value is float32(d * q) + m with two roundings: a fused multiply-add differs here.
TEST(Gguf, Q4_1RoundsMultiplyBeforeAdd) {
  std::mt19937 rng(7);
  int checked = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const uint16_t d = static_cast<uint16_t>(0x2000 + rng() % 0x1800),
                   m = static_cast<uint16_t>(0x8000 | (0x2000 + rng() % 0x1800));
    std::string blk;
    GgufBuilder::put<uint16_t>(blk, d);
    GgufBuilder::put<uint16_t>(blk, m);
    for (int i = 0; i < 16; ++i) blk.push_back(static_cast<char>(rng()));
    uint16_t out[32];
    dequantize_to_f16(3, reinterpret_cast<const uint8_t*>(blk.data()), out, 32);
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = static_cast<uint8_t>(blk[4 + j % 16]);
      const int q = j < 16 ? byte & 0xf : byte >> 4;
      volatile float prod = half_to_float(d) * static_cast<float>(q);  // volatile: forces rounding
      const float want = prod + half_to_float(m);
      ASSERT_EQ(out[j], float_to_half(want)) << trial << " " << j;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 64000);
}

TEST(Gguf, UnsupportedTypeNamesTensor) {
  GgufBuilder b;
  b.tensor("blk.0.ffn_down.weight", {256}, 16, std::string(66, '\0'));  // IQ2_XXS
  const GgufFile g = parse_str(b.build());
  expect_error([&] { g.dequantize_f16(g.tensor("blk.0.ffn_down.weight")); },
               "unsupported tensor type IQ2_XXS", "blk.0.ffn_down.weight");
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// tests/io/data/gguf_goldens.json (scripts/gguf_goldens.py): random blocks of each quantized
// type and their float32 values from gguf-py, llama.cpp's Python package. Every value must
// round to the same float16, through the block function and through a 2-row tensor.
TEST(Gguf, DequantizationMatchesGgufPy) {
  std::ifstream in(fs::path(EXQ_SOURCE_DIR) / "tests/io/data/gguf_goldens.json");
  ASSERT_TRUE(in) << "tests/io/data/gguf_goldens.json";
  const nlohmann::json goldens = nlohmann::json::parse(in);
  std::vector<std::string> names;
  for (const auto& t : goldens.at("types")) {
    const uint32_t type = t.at("type").get<uint32_t>();
    const std::string name = t.at("name").get<std::string>();
    names.push_back(name);
    EXPECT_EQ(ggml_type_name(type), name);
    ASSERT_TRUE(gguf_dequant_supported(type)) << name;
    const std::string blocks = from_hex(t.at("blocks").get<std::string>());
    const std::string bits = from_hex(t.at("values_f32_bits").get<std::string>());
    const int64_t n = static_cast<int64_t>(bits.size() / 4), block = t.at("block_size").get<int64_t>();
    int64_t block_size = 0, type_size = 0;
    ASSERT_TRUE(ggml_type_block(type, &block_size, &type_size));
    ASSERT_EQ(block_size, block);
    ASSERT_EQ(static_cast<int64_t>(blocks.size()), n / block * type_size) << name;
    std::vector<uint16_t> want(n);
    for (int64_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, bits.data() + 4 * i, 4);
      want[i] = float_to_half(f);
    }
    std::vector<uint16_t> got(n);
    dequantize_to_f16(type, reinterpret_cast<const uint8_t*>(blocks.data()), got.data(), n);
    int mismatches = 0;
    for (int64_t i = 0; i < n; ++i)
      if (got[i] != want[i] && ++mismatches <= 3)
        ADD_FAILURE() << name << " value " << i << ": " << half_to_float(got[i]) << " vs "
                      << half_to_float(want[i]);
    EXPECT_EQ(mismatches, 0) << name;

    GgufBuilder b;
    b.tensor("t", {static_cast<uint64_t>(n / 2), 2}, type, blocks);
    const GgufFile g = parse_str(b.build());
    const Tensor t2 = g.dequantize_f16(g.tensor("t"));
    EXPECT_EQ(t2.shape(), (Shape{2, n / 2}));
    EXPECT_TRUE(std::equal(want.begin(), want.end(), t2.span<uint16_t>().begin())) << name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                                             "Q6_K", "IQ4_NL", "IQ4_XS", "Q4_0", "Q4_1",
                                             "Q8_0"}));
}

// A value outside float16's range (here a Q8_0 scale of 65504 times 127), or inf / NaN stored
// in the file, must not reach an imported model: the error names the tensor and the value.
TEST(Gguf, NonFiniteValuesNameTensor) {
  GgufBuilder b;
  std::string q8;
  for (int blk = 0; blk < 2; ++blk) {
    GgufBuilder::put<uint16_t>(q8, float_to_half(blk == 0 ? 0.5f : 65504.0f));
    for (int i = 0; i < 32; ++i) q8.push_back(static_cast<char>(i == 5 ? 127 : 1));
  }
  std::string f16(64, '\0');
  const uint16_t nan = 0x7e00;
  std::memcpy(f16.data() + 2 * 21, &nan, 2);
  b.tensor("blk.0.ffn_up.weight", {32, 2}, 8, q8);
  b.tensor("blk.0.ffn_gate.weight", {16, 2}, 1, f16);
  const GgufFile g = parse_str(b.build());
  expect_error([&] { g.dequantize_f16(g.tensor("blk.0.ffn_up.weight")); },
               "value [1, 5] (Q8_0) is infinite in float16", "blk.0.ffn_up.weight");
  expect_error([&] { g.dequantize_f16(g.tensor("blk.0.ffn_gate.weight")); },
               "value [1, 5] (F16) is NaN in float16", "blk.0.ffn_gate.weight");
}

TEST(Gguf, TinyLlamaHasAlignedTensors) {
  const GgufFile g = parse_str(test::tiny_llama_builder().build());
  EXPECT_EQ(g.tensors().size(), 11u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  for (const auto& t : g.tensors()) {
    const Tensor x = g.dequantize_f16(t);
    EXPECT_EQ(x.shape(), t.hf_shape());
    EXPECT_FALSE(has_non_finite(x.view())) << t.name;
  }
  // A custom alignment is honoured.
  GgufBuilder b = test::tiny_llama_builder();
  b.alignment = 64;
  b.kv<uint32_t>("general.alignment", GgufBuilder::U32, 64);
  const GgufFile g64 = parse_str(b.build());
  EXPECT_EQ(g64.alignment(), 64u);
  EXPECT_EQ(g64.data_offset() % 64, 0u);
}

TEST(Gguf, HeaderErrors) {
  expect_error([] { parse_str("GGU"); }, "magic: needs 4 bytes");
  expect_error([] { parse_str("GGML\3\0\0\0"); }, "bad magic");
  GgufBuilder b;
  b.version = 1;
  expect_error([&] { parse_str(b.build()); }, "unsupported GGUF version 1");
  b.version = 4;
  expect_error([&] { parse_str(b.build()); }, "unsupported GGUF version 4");
  std::string s = GgufBuilder().build();
  s.replace(16, 8, std::string("\xff\xff\xff\xff\xff\xff\xff\x0f", 8));  // kv count
  expect_error([&] { parse_str(s); }, "metadata count");
  s = GgufBuilder().build();
  s.replace(8, 8, std::string("\0\0\0\0\0\0\1\0", 8));  // tensor count 2^48
  expect_error([&] { parse_str(s); }, "tensor count");
}

TEST(Gguf, MetadataErrors) {
  {  // string length past the end
    GgufBuilder b;
    std::string v;
    GgufBuilder::put<uint32_t>(v, GgufBuilder::STR);
    GgufBuilder::put<uint64_t>(v, 1ull << 60);
    b.kv_raw("k", v);
    expect_error([&] { parse_str(b.build()); }, "metadata 'k': needs 1152921504606846976 bytes");
  }
  {  // array count claiming more items than bytes left: rejected before allocating
    GgufBuilder b;
    std::string v;
    GgufBuilder::put<uint32_t>(v, GgufBuilder::ARR);
    GgufBuilder::put<uint32_t>(v, GgufBuilder::U32);
    GgufBuilder::put<uint64_t>(v, 1ull << 40);
    b.kv_raw("arr", v);
    expect_error([&] { parse_str(b.build()); }, "array claims 1099511627776 uint32 items");
  }
  {
    GgufBuilder b;
    std::string v;
    GgufBuilder::put<uint32_t>(v, 13);
    b.kv_raw("bad", v);
    expect_error([&] { parse_str(b.build()); }, "invalid value type 13");
  }
  {
    GgufBuilder b;
    b.kv<uint8_t>("flag", GgufBuilder::BOOL, 2);
    expect_error([&] { parse_str(b.build()); }, "bool byte is 2");
  }
  {
    GgufBuilder b;
    b.kv_str("a", "x");
    b.kv_str("a", "y");
    expect_error([&] { parse_str(b.build()); }, "duplicate metadata 'a'");
  }
  {
    GgufBuilder b;
    b.kv<uint32_t>("general.alignment", GgufBuilder::U32, 24);
    expect_error([&] { parse_str(b.build()); }, "not a power of two");
  }
  {  // arrays nested too deep
    GgufBuilder b;
    std::string v;
    GgufBuilder::put<uint32_t>(v, GgufBuilder::ARR);
    for (int i = 0; i < 5; ++i) {
      GgufBuilder::put<uint32_t>(v, GgufBuilder::ARR);
      GgufBuilder::put<uint64_t>(v, 1);
    }
    GgufBuilder::put<uint32_t>(v, GgufBuilder::U8);
    GgufBuilder::put<uint64_t>(v, 0);
    b.kv_raw("deep", v);
    expect_error([&] { parse_str(b.build()); }, "nested deeper");
  }
}

TEST(Gguf, TensorInfoErrors) {
  auto one = [](std::vector<uint64_t> dims, uint32_t type, size_t bytes) {
    GgufBuilder b;
    b.tensor("t", std::move(dims), type, std::string(bytes, '\0'));
    return b.build();
  };
  expect_error([&] { parse_str(one({5, 5, 5, 5, 5}, 0, 4 * 3125)); }, "5 dimensions", "t");
  expect_error([&] { parse_str(one({33}, 8, 34)); }, "not a multiple of the Q8_0 block size 32",
               "t");
  expect_error([&] { parse_str(one({32}, 77, 34)); }, "unknown tensor type id 77", "t");
  expect_error([&] { parse_str(one({1ull << 62, 1ull << 62}, 0, 4)); }, "overflows", "t");
  // numel fits int64 but numel * 4 bytes wraps to 0 in 64 bits (found by gguf_fuzz).
  expect_error([&] { parse_str(one({1ull << 62}, 0, 4)); }, "overflows", "t");
  std::string s = one({8}, 0, 32);
  s.resize(s.size() - 1);
  expect_error([&] { parse_str(s); }, "run past the end", "t");
  {  // misaligned offset
    GgufBuilder b;
    b.tensor("t", {8}, 0, std::string(32, '\0'));
    std::string x = b.build();
    const size_t off_pos = x.find("t\x01\0\0\0", 0, 5) + 1 + 4 + 8 + 4;
    x[off_pos] = 4;
    expect_error([&] { parse_str(x); }, "not a multiple of the alignment", "t");
  }
  {  // two tensors sharing bytes
    GgufBuilder b;
    b.tensor("a", {16}, 0, std::string(64, '\0'));
    b.tensor("b", {8}, 0, std::string(32, '\0'));
    std::string x = b.build();
    const size_t off_pos = x.find("b\x01\0\0\0", 0, 5) + 1 + 4 + 8 + 4;
    x[off_pos] = 32;
    expect_error([&] { parse_str(x); }, "overlaps tensor 'a'", "b");
  }
  {
    GgufBuilder b;
    b.tensor("a", {8}, 0, std::string(32, '\0'));
    b.tensor("a", {8}, 0, std::string(32, '\0'));
    expect_error([&] { parse_str(b.build()); }, "duplicate tensor name", "a");
  }
  EXPECT_THROW(GgufFile::open("/nonexistent/x.gguf"), Error);
}

TEST(Gguf, EveryTruncationFails) {
  const std::string s = test::tiny_llama_builder().build();
  // Cutting inside the data keeps the header valid, so test every header byte and a
  // stride through the data.
  const GgufFile full = parse_str(s);
  for (size_t n = 0; n < s.size(); n += (n < full.data_offset() ? 1 : 97))
    EXPECT_THROW(parse_str(s.substr(0, n)), Error) << n;
}

// Random mutations of a valid file: parsing, dequantizing and building the HF configs must
// only ever succeed or throw exq::Error.
TEST(Gguf, RandomCorruptionNeverCrashes) {
  const std::string base = test::tiny_llama_builder().build();
  const size_t header_end = parse_str(base).data_offset();
  std::mt19937 rng(4242);
  int parsed = 0, rejected = 0;
  for (int it = 0; it < 1000; ++it) {
    std::string s = base;
    switch (rng() % 4) {
      case 0:
        for (int k = 1 + static_cast<int>(rng() % 6); k > 0; --k)
          s[rng() % header_end] = static_cast<char>(rng());
        break;
      case 1:
        s.resize(rng() % s.size());
        break;
      case 2: {  // set one byte of a length/count-like field to an extreme value
        const size_t p = rng() % (header_end - 8);
        s[p + rng() % 8] = static_cast<char>(rng() % 2 ? 0xff : 0x7f);
        break;
      }
      default:
        for (int k = 0; k < 4; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    }
    try {
      const GgufFile g = parse_str(s);
      ++parsed;
      for (const auto& t : g.tensors()) {
        try {
          const Tensor x = g.dequantize_f16(t);
          EXPECT_EQ(x.numel(), t.numel());
        } catch (const Error&) {
        }
      }
      for (auto fn : {hf_config_from_gguf, hf_generation_config_from_gguf, hf_tokenizer_from_gguf,
                      hf_tokenizer_config_from_gguf}) {
        try {
          (void)fn(g).dump();
        } catch (const Error&) {
        } catch (const nlohmann::json::exception&) {  // invalid UTF-8 on dump; import maps it
        }
      }
      try {
        (void)gguf_to_hf_tensors(g);
      } catch (const Error&) {
      }
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << it << ": non-exq exception: " << e.what();
    }
  }
  EXPECT_EQ(parsed + rejected, 1000);
  EXPECT_GT(rejected, 300);
  std::printf("gguf corruption: %d parsed, %d rejected\n", parsed, rejected);
}

// fuzz/seeds/gguf/tiny.gguf is this generator's output; EXQ_REGEN_SEEDS=1 rewrites it.
TEST(Gguf, FuzzSeedMatchesGenerator) {
  const fs::path seed = fs::path(EXQ_SOURCE_DIR) / "fuzz/seeds/gguf/tiny.gguf";
  const std::string want = test::tiny_llama_builder().build();
  if (std::getenv("EXQ_REGEN_SEEDS")) {
    fs::create_directories(seed.parent_path());
    std::ofstream(seed, std::ios::binary) << want;
  }
  ASSERT_TRUE(fs::exists(seed)) << seed;
  EXPECT_EQ(test::read_file(seed), want);
  EXPECT_NO_THROW(GgufFile::open(seed));
}

}  // namespace exq::io
