#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "test_support.h"

namespace exq::io {
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> make_file(const std::string& header, size_t data_bytes,
                               uint64_t len_override = 0) {
  std::string s;
  const uint64_t n = len_override ? len_override : header.size();
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(n >> (8 * i)));
  s += header;
  for (size_t i = 0; i < data_bytes; ++i) s.push_back(static_cast<char>(i * 7));
  return std::vector<uint8_t>(s.begin(), s.end());
}

SafetensorsFile parse_bytes(std::vector<uint8_t> bytes) {
  return SafetensorsFile::parse(MappedFile::from_bytes(std::move(bytes), "mem.safetensors"));
}

// Runs `fn`, expecting exq::Error whose message contains `needle` (and tensor context if given).
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

Tensor random_tensor(DType dt, Shape shape, std::mt19937& rng) {
  Tensor t(dt, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(rng());
  return t;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  std::mt19937 rng(1);
  std::vector<std::pair<std::string, Tensor>> owned;
  owned.emplace_back("u8", random_tensor(DType::U8, {5, 3}, rng));
  owned.emplace_back("f32", random_tensor(DType::F32, {4, 7}, rng));
  owned.emplace_back("f16", random_tensor(DType::F16, {3, 3, 3}, rng));
  owned.emplace_back("bf16", random_tensor(DType::BF16, {9}, rng));
  owned.emplace_back("i8", random_tensor(DType::I8, {1, 1, 1, 13}, rng));
  owned.emplace_back("i16", random_tensor(DType::I16, {6}, rng));
  owned.emplace_back("i32", random_tensor(DType::I32, {2, 5}, rng));
  owned.emplace_back("scalar", random_tensor(DType::F32, {}, rng));
  owned.emplace_back("empty", random_tensor(DType::F16, {0, 4}, rng));
  std::vector<NamedTensor> named;
  for (auto& [n, t] : owned) named.push_back({n, t.view()});
  const fs::path dir = test::temp_dir("st_roundtrip");
  const auto files = write_safetensors(dir / "m.safetensors", named, {{"format", "pt"}});
  ASSERT_EQ(files.size(), 1u);

  SafetensorsFile f = SafetensorsFile::open(dir / "m.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  // Deterministic order: element size descending, then name.
  const std::vector<std::string> want = {"f32", "i32", "scalar", "bf16", "empty",
                                         "f16", "i16", "i8",     "u8"};
  EXPECT_EQ(f.names(), want);
  for (auto& [n, t] : owned) {
    ASSERT_TRUE(f.contains(n));
    const TensorView v = f.get(n);
    EXPECT_TRUE(same_bytes(v, t.view())) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.raw()) % dtype_size(v.dtype()), 0u) << n;
  }
  // Header padded so data starts 8-byte aligned.
  const std::string raw = test::read_file(dir / "m.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  // Writing again gives identical bytes, whatever the input order.
  std::reverse(named.begin(), named.end());
  write_safetensors(dir / "m2.safetensors", named, {{"format", "pt"}});
  EXPECT_EQ(test::read_file(dir / "m2.safetensors"), raw);
  expect_error([&] { f.get("nope"); }, "no such tensor", "nope");
}

TEST(Safetensors, WritesNonContiguousViews) {
  Tensor t(DType::F32, {2, 3});
  for (int i = 0; i < 6; ++i) t.data<float>()[i] = static_cast<float>(i);
  const TensorView transposed(t.raw(), DType::F32, {3, 2}, {1, 3});
  const fs::path dir = test::temp_dir("st_strided");
  write_safetensors(dir / "t.safetensors", {{"t", transposed}});
  const SafetensorsFile f = SafetensorsFile::open(dir / "t.safetensors");
  const float* p = f.get("t").data<float>();
  EXPECT_EQ(std::vector<float>(p, p + 6), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Safetensors, ShardedWithIndex) {
  std::mt19937 rng(2);
  std::vector<std::pair<std::string, Tensor>> owned;
  for (int i = 0; i < 7; ++i)
    owned.emplace_back(fmt::format("layer.{}.w", i),
                       random_tensor(i % 2 ? DType::F16 : DType::F32, {16, 8}, rng));
  std::vector<NamedTensor> named;
  for (auto& [n, t] : owned) named.push_back({n, t.view()});
  const fs::path dir = test::temp_dir("st_sharded");
  const auto files = write_safetensors(dir / "model.safetensors", named, {{"format", "pt"}}, 1100);
  ASSERT_GE(files.size(), 4u);
  EXPECT_EQ(files.back(), dir / "model.safetensors.index.json");
  EXPECT_EQ(files.front().filename().string(),
            fmt::format("model-00001-of-{:05d}.safetensors", files.size() - 1));
  const auto index = nlohmann::json::parse(test::read_file(files.back()));
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), 4u * 512 + 3u * 256);
  EXPECT_EQ(index["weight_map"].size(), 7u);

  const SafetensorsModel m = SafetensorsModel::open(dir);
  EXPECT_EQ(m.names().size(), 7u);
  for (auto& [n, t] : owned) {
    EXPECT_TRUE(same_bytes(m.get(n), t.view())) << n;
    EXPECT_EQ(m.file_of(n).filename().string(), index["weight_map"][n].get<std::string>());
  }
  expect_error([&] { m.get("missing"); }, "no such tensor", "missing");
}

// A sharded write over a single file (and the reverse) leaves only the new files of that stem;
// other files stay. The side-file copy takes everything but weights and the names skipped.
TEST(Safetensors, StaleShardsAndSideFiles) {
  std::mt19937 rng(3);
  std::vector<Tensor> owned;
  std::vector<NamedTensor> named;
  for (int i = 0; i < 5; ++i) {
    owned.push_back(random_tensor(DType::F32, {16, 8}, rng));
    named.push_back({fmt::format("w.{}", i), owned.back().view()});
  }
  const fs::path dir = test::temp_dir("st_stale");
  auto names = [&] {
    std::set<std::string> n;
    for (const auto& e : fs::directory_iterator(dir)) n.insert(e.path().filename().string());
    return n;
  };
  std::ofstream(dir / "model-extra.txt") << "x";
  std::ofstream(dir / "other.safetensors") << "x";
  const auto one = write_safetensors(dir / "model.safetensors", named);
  remove_stale_safetensors(dir / "model.safetensors", one);
  const auto sharded = write_safetensors(dir / "model.safetensors", named, {}, 1100);
  remove_stale_safetensors(dir / "model.safetensors", sharded);
  std::set<std::string> want = {"model-extra.txt", "other.safetensors"};
  for (const fs::path& f : sharded) want.insert(f.filename().string());
  EXPECT_EQ(names(), want);
  EXPECT_GE(sharded.size(), 3u);
  remove_stale_safetensors(dir / "model.safetensors", write_safetensors(dir / "model.safetensors", named));
  EXPECT_EQ(names(), (std::set<std::string>{"model-extra.txt", "other.safetensors", "model.safetensors"}));

  const fs::path out = test::temp_dir("st_side");
  std::ofstream(dir / "config.json") << "{}";
  std::ofstream(dir / "tokenizer.json") << "{}";
  std::ofstream(dir / "pytorch_model.bin") << "x";
  fs::create_directories(dir / "sub");
  const auto copied = copy_model_side_files(dir, out, {"config.json"});
  EXPECT_EQ(copied.size(), 2u);
  std::set<std::string> got;
  for (const auto& e : fs::directory_iterator(out)) got.insert(e.path().filename().string());
  EXPECT_EQ(got, (std::set<std::string>{"model-extra.txt", "tokenizer.json"}));
}

TEST(Safetensors, FolderWithoutIndexUsesAllFiles) {
  std::mt19937 rng(3);
  Tensor a = random_tensor(DType::F32, {3}, rng), b = random_tensor(DType::I8, {4}, rng);
  const fs::path dir = test::temp_dir("st_glob");
  write_safetensors(dir / "output-00001-of-00002.safetensors", {{"a", a.view()}});
  write_safetensors(dir / "output-00002-of-00002.safetensors", {{"b", b.view()}});
  const SafetensorsModel m = SafetensorsModel::open(dir);
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(same_bytes(m.get("b"), b.view()));
  // The same tensor in two files is ambiguous.
  write_safetensors(dir / "output-00003-of-00003.safetensors", {{"a", a.view()}});
  expect_error([&] { SafetensorsModel::open(dir); }, "also present", "a");
  expect_error([&] { SafetensorsModel::open(test::temp_dir("st_none")); }, "no .safetensors files");
}

TEST(Safetensors, MissingShardNamesIndexAndTensor) {
  std::mt19937 rng(4);
  Tensor a = random_tensor(DType::F32, {64}, rng), b = random_tensor(DType::F32, {64}, rng);
  const fs::path dir = test::temp_dir("st_missing_shard");
  const auto files =
      write_safetensors(dir / "model.safetensors", {{"a", a.view()}, {"b", b.view()}}, {}, 256);
  ASSERT_EQ(files.size(), 3u);
  fs::remove(files[1]);
  try {
    SafetensorsModel::open(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, (dir / "model.safetensors.index.json").string());
    EXPECT_EQ(e.context().tensor, "b");
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors is missing"),
              std::string::npos)
        << e.what();
  }
  // An index naming a tensor its shard lacks.
  write_safetensors(files[1], {{"c", b.view()}});
  expect_error([&] { SafetensorsModel::open(dir); }, "not in this shard", "b");
  write_file_atomic(dir / "model.safetensors.index.json",
                    std::string_view("{\"weight_map\": {\"a\": \"../x\"}}"));
  expect_error([&] { SafetensorsModel::open(dir); }, "not a plain file name", "a");
  write_file_atomic(dir / "model.safetensors.index.json", std::string_view("{nope"));
  expect_error([&] { SafetensorsModel::open(dir); }, "not valid JSON");
}

TEST(Safetensors, TruncatedFiles) {
  for (size_t n = 0; n < 8; ++n)
    expect_error([&] { parse_bytes(std::vector<uint8_t>(n, 0)); }, "shorter than the 8-byte");
  // A valid file cut anywhere must fail cleanly.
  const std::string h = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const std::vector<uint8_t> full = make_file(h, 16);
  EXPECT_NO_THROW(parse_bytes(full));
  for (size_t n = 0; n < full.size(); ++n)
    EXPECT_THROW(parse_bytes(std::vector<uint8_t>(full.begin(), full.begin() + n)), Error) << n;
}

TEST(Safetensors, HeaderLength) {
  expect_error([&] { parse_bytes(make_file("{}", 0, 1000)); }, "runs past the end");
  expect_error([&] { parse_bytes(make_file("{}", 0, 200'000'000)); }, "exceeds the");
  expect_error([&] { parse_bytes(make_file("{}", 0, ~0ull)); }, "exceeds the");
  EXPECT_TRUE(parse_bytes(make_file("{}", 0)).names().empty());
  EXPECT_TRUE(parse_bytes(make_file("{}      ", 0)).names().empty());
}

TEST(Safetensors, HeaderJson) {
  expect_error([&] { parse_bytes(make_file("{\"a\":", 0)); }, "not valid JSON");
  expect_error([&] { parse_bytes(make_file("[1,2]", 0)); }, "not a JSON object");
  expect_error([&] { parse_bytes(make_file("\"str\"", 0)); }, "not a JSON object");
  expect_error([&] { parse_bytes(make_file("{\"a\":[[[[1]]]]}", 0)); }, "nested deeper");
  expect_error([&] { parse_bytes(make_file("{\"a\":1}", 0)); }, "not a JSON object", "a");
  expect_error([&] { parse_bytes(make_file(R"({"a":{"dtype":"F32","shape":[]}})", 4)); }, "lacks",
               "a");
  expect_error([&] { parse_bytes(make_file(R"({"__metadata__":{"k":1}})", 0)); }, "not a string");
  expect_error([&] { parse_bytes(make_file(R"({"__metadata__":[]})", 0)); }, "__metadata__ is not");
  const std::string dup = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  expect_error([&] { parse_bytes(make_file(dup, 2)); }, "duplicate", "a");
}

TEST(Safetensors, DtypeShapeAndOffsets) {
  auto one = [](const std::string& dtype, const std::string& shape, const std::string& offs) {
    return R"({"t":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offs +
           "}}";
  };
  expect_error([&] { parse_bytes(make_file(one("F64", "[2]", "[0,16]"), 16)); },
               "unsupported dtype F64", "t");
  expect_error([&] { parse_bytes(make_file(one("f32", "[2]", "[0,8]"), 8)); },
               "unsupported dtype f32", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[-2]", "[0,8]"), 8)); },
               "non-negative integer", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[2.0]", "[0,8]"), 8)); },
               "non-negative integer", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[\"2\"]", "[0,8]"), 8)); },
               "non-negative integer", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "2", "[0,8]"), 8)); },
               "shape is not an array", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[3]", "[0,8]"), 8)); }, "needs 12 bytes",
               "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[4294967296,4294967296]", "[0,8]"), 8)); },
               "overflows", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[0,9223372036854775807,4]", "[0,0]"), 8)); },
               "overflows", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[2]", "[0,8]"), 4)); },
               "outside the data region", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[2]", "[8,0]"), 8)); },
               "outside the data region", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[2]", "[0]"), 8)); }, "pair", "t");
  expect_error([&] { parse_bytes(make_file(one("F32", "[2]", "[0,-8]"), 8)); }, "non-negative",
               "t");
  EXPECT_EQ(parse_bytes(make_file(one("F32", "[2]", "[0,8]"), 8)).get("t").numel(), 2);
  EXPECT_EQ(parse_bytes(make_file(one("BF16", "[0,5]", "[3,3]"), 8)).get("t").numel(), 0);
}

TEST(Safetensors, Overlap) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_error([&] { parse_bytes(make_file(h, 12)); }, "overlaps tensor 'a'", "b");
  const std::string same = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                           R"("b":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})";
  expect_error([&] { parse_bytes(make_file(same, 2)); }, "overlaps");
  // Touching ranges and zero-size tensors at the same offset are fine.
  const std::string ok = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                         R"("z":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
                         R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
  EXPECT_EQ(parse_bytes(make_file(ok, 4)).names(), (std::vector<std::string>{"a", "z", "b"}));
}

// Random byte flips, header-length damage and truncation of a valid file: parsing must
// either succeed with in-bounds views or throw exq::Error, never anything else.
TEST(Safetensors, RandomCorruptionNeverCrashes) {
  std::mt19937 rng(12345);
  std::vector<std::pair<std::string, Tensor>> owned;
  owned.emplace_back("model.embed.weight", random_tensor(DType::F16, {8, 4}, rng));
  owned.emplace_back("model.norm.weight", random_tensor(DType::F32, {4}, rng));
  owned.emplace_back("ids", random_tensor(DType::I32, {3}, rng));
  owned.emplace_back("q", random_tensor(DType::I8, {2, 3}, rng));
  std::vector<NamedTensor> named;
  for (auto& [n, t] : owned) named.push_back({n, t.view()});
  const fs::path dir = test::temp_dir("st_corrupt");
  write_safetensors(dir / "base.safetensors", named, {{"format", "pt"}});
  const std::string base = test::read_file(dir / "base.safetensors");

  int ok = 0, errors = 0;
  for (int it = 0; it < 1000; ++it) {
    std::vector<uint8_t> b(base.begin(), base.end());
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      for (int k = 1 + static_cast<int>(rng() % 8); k > 0; --k)
        b[rng() % b.size()] = static_cast<uint8_t>(rng());
    } else if (kind == 1) {
      b.resize(rng() % b.size());
    } else if (kind == 2) {
      b[rng() % 8] = static_cast<uint8_t>(rng());
    } else {
      // Overwrite a header byte with a JSON-significant character.
      static const char kChars[] = "{}[]\",:0123456789-.e ";
      uint64_t n = 0;
      std::memcpy(&n, b.data(), 8);
      b[8 + rng() % n] = static_cast<uint8_t>(kChars[rng() % (sizeof(kChars) - 1)]);
    }
    try {
      const SafetensorsFile f = parse_bytes(std::move(b));
      uint64_t sum = 0;
      for (const std::string& n : f.names()) {
        const TensorView v = f.get(n);
        const auto* p = static_cast<const uint8_t*>(v.raw());
        for (size_t i = 0; i < v.nbytes(); ++i) sum += p[i];
      }
      (void)sum;
      ++ok;
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << it << ": non-exq exception: " << e.what();
    }
  }
  EXPECT_EQ(ok + errors, 1000);
  EXPECT_GT(errors, 500);
  std::printf("corruption: %d parsed, %d rejected\n", ok, errors);
}

// fuzz/seeds/safetensors/small.safetensors is this writer's output; EXQ_REGEN_SEEDS=1 rewrites it.
TEST(Safetensors, FuzzSeedMatchesGenerator) {
  std::mt19937 rng(99);
  Tensor a = random_tensor(DType::F16, {4, 8}, rng), b = random_tensor(DType::I32, {3}, rng),
         c = random_tensor(DType::U8, {2, 2, 2}, rng), d = random_tensor(DType::BF16, {5}, rng);
  const fs::path dir = test::temp_dir("st_seed");
  write_safetensors(dir / "s.safetensors",
                    {{"w", a.view()}, {"ids", b.view()}, {"q", c.view()}, {"n", d.view()}},
                    {{"format", "pt"}});
  const std::string want = test::read_file(dir / "s.safetensors");
  const fs::path seed = fs::path(EXQ_SOURCE_DIR) / "fuzz/seeds/safetensors/small.safetensors";
  if (std::getenv("EXQ_REGEN_SEEDS")) {
    fs::create_directories(seed.parent_path());
    std::ofstream(seed, std::ios::binary) << want;
  }
  ASSERT_TRUE(fs::exists(seed)) << seed;
  EXPECT_EQ(test::read_file(seed), want);
}

}  // namespace exq::io
