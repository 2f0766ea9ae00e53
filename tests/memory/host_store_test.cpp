// memory::HostStore: buffers stay in RAM within the budget and spill to unlinked file mappings
// beyond it; spilled buffers read and write like RAM ones; per-tier accounting and peaks follow
// every allocation and release; bad spill folders are clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "memory/host_store.h"
#include "test_support.h"

namespace exq::memory {
namespace {
namespace fs = std::filesystem;

size_t files_in(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(HostStore, WithinBudgetStaysInRamBeyondItSpills) {
  const fs::path dir = test::temp_dir("host_store_tiers");
  HostStore store({.ram_budget_bytes = 1000, .spill_dir = dir / "spill"});
  HostBuffer a = store.allocate(DType::F32, {2, 100});  // 800 bytes: fits
  EXPECT_EQ(a.tier(), Tier::kRam);
  HostBuffer b = store.allocate(DType::F32, {2, 100});  // 1600 > 1000: spills
  EXPECT_EQ(b.tier(), Tier::kFile);
  EXPECT_EQ(b.view().shape(), Shape({2, 100}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.view().raw()) % 4096, 0u);
  // Spill files are unlinked once mapped: nothing stays in the folder.
  EXPECT_EQ(files_in(dir / "spill"), 0u);

  float* p = b.view().data<float>();
  for (int i = 0; i < 200; ++i) p[i] = static_cast<float>(i) * 0.25f;
  for (int i = 0; i < 200; ++i) ASSERT_EQ(b.view().data<float>()[i], static_cast<float>(i) * 0.25f);

  HostStoreStats s = store.stats();
  EXPECT_EQ(s.ram_bytes, 800);
  EXPECT_EQ(s.file_bytes, 800);
  EXPECT_EQ(s.peak_bytes, 1600);
  EXPECT_EQ(s.spilled_buffers, 1);
  EXPECT_EQ(s.spilled_bytes, 800);

  a.reset();  // RAM freed: the next buffer fits again
  HostBuffer c = store.allocate(DType::F16, {300});
  EXPECT_EQ(c.tier(), Tier::kRam);
  b = HostBuffer();  // move-assign releases the mapping
  s = store.stats();
  EXPECT_EQ(s.ram_bytes, 600);
  EXPECT_EQ(s.file_bytes, 0);
  EXPECT_EQ(s.peak_ram_bytes, 800);
  EXPECT_EQ(s.peak_file_bytes, 800);
  EXPECT_EQ(s.peak_bytes, 1600);
}

TEST(HostStore, AdoptKeepsTensorInRamOrCopiesItToAFile) {
  const fs::path dir = test::temp_dir("host_store_adopt");
  Tensor t(DType::F32, {3, 5, 7});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i) - 50.5f;
  const Tensor ref = Tensor::copy_of(t);
  {
    HostStore store({.ram_budget_bytes = -1, .spill_dir = dir});
    const void* before = t.raw();
    Tensor moved = Tensor::copy_of(t);
    const void* moved_ptr = moved.raw();
    HostBuffer b = store.adopt(std::move(moved));
    EXPECT_EQ(b.tier(), Tier::kRam);
    EXPECT_EQ(b.view().raw(), moved_ptr);  // no copy
    EXPECT_NE(b.view().raw(), before);
    EXPECT_EQ(0, std::memcmp(b.view().raw(), ref.raw(), ref.nbytes()));
  }
  HostStore store({.ram_budget_bytes = 0, .spill_dir = dir});
  HostBuffer b = store.adopt(Tensor::copy_of(t));
  EXPECT_EQ(b.tier(), Tier::kFile);
  EXPECT_EQ(b.shape(), ref.shape());
  EXPECT_EQ(0, std::memcmp(b.view().raw(), ref.raw(), ref.nbytes()));
  EXPECT_EQ(store.stats().ram_bytes, 0);
  EXPECT_EQ(store.stats().file_bytes, static_cast<int64_t>(ref.nbytes()));

  // copy_of a strided view (one column of a matrix) gives a contiguous buffer.
  const TensorView strided(t.raw(), DType::F32, {15}, {7});
  HostBuffer col = store.copy_of(strided);
  for (int64_t i = 0; i < 15; ++i) EXPECT_EQ(col.view().data<float>()[i], ref.data<float>()[i * 7]);
}

TEST(HostStore, BuffersOutliveTheStoreAndMoveCleanly) {
  const fs::path dir = test::temp_dir("host_store_outlive");
  HostBuffer kept;
  {
    HostStore store({.ram_budget_bytes = 0, .spill_dir = dir});
    kept = store.allocate(DType::I32, {1024});
    kept.view().data<int32_t>()[1023] = 42;
  }
  HostBuffer moved = std::move(kept);
  EXPECT_TRUE(kept.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_EQ(moved.view().data<int32_t>()[1023], 42);
}

TEST(HostStore, BadSpillFolderIsAClearError) {
  const fs::path dir = test::temp_dir("host_store_bad");
  std::ofstream(dir / "file") << "x";
  HostStore store({.ram_budget_bytes = 0, .spill_dir = dir / "file" / "spill"});
  try {
    store.allocate(DType::F32, {16});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "file" / "spill").string()), std::string::npos)
        << e.what();
  }
  HostStore no_dir({.ram_budget_bytes = 0, .spill_dir = {}});
  EXPECT_THROW(no_dir.allocate(DType::F32, {16}), Error);
  EXPECT_THROW(no_dir.allocate(DType::F32, {0}), Error);
  EXPECT_EQ(no_dir.stats().ram_bytes, 0);
  EXPECT_GT(default_host_budget(), 0);
}

}  // namespace
}  // namespace exq::memory
