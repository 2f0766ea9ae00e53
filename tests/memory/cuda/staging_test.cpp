// StagingRing (pinned ring + copy stream) and the interval math behind copy_hidden. The
// interval tests run everywhere; the transfer tests skip without a GPU.
#include "memory/cuda/staging.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/stream.h"
#include "memory/cuda/overlap.h"

namespace exq::memory::cuda {
namespace {

bool have_gpu() {
  return exq::cuda::device_count() > 0 &&
         exq::cuda::device_info(0).cc_major >= exq::cuda::kMinComputeMajor;
}

#define REQUIRE_GPU()                                         \
  do {                                                        \
    if (!have_gpu()) GTEST_SKIP() << "no usable CUDA device"; \
    exq::cuda::require_device(0);                             \
  } while (0)

TEST(Overlap, UnionMergesOverlapsAndIgnoresEmpty) {
  EXPECT_DOUBLE_EQ(union_length({{0, 2}, {1, 3}, {5, 6}, {4, 4}, {7, 6}}), 4.0);
  EXPECT_DOUBLE_EQ(union_length({}), 0.0);
  EXPECT_DOUBLE_EQ(union_length({{2, 3}, {0, 1}, {0.5, 2.5}}), 3.0);
}

TEST(Overlap, IntersectionOfUnions) {
  // a covers [0,4) and [6,8); b covers [3,7)
  EXPECT_DOUBLE_EQ(overlap_length({{0, 2}, {1, 4}, {6, 8}}, {{3, 5}, {4, 7}}), 2.0);
  EXPECT_DOUBLE_EQ(overlap_length({{0, 1}}, {{1, 2}}), 0.0);
  EXPECT_DOUBLE_EQ(overlap_length({{0, 10}}, {{1, 2}, {3, 4}, {9, 12}}), 3.0);
}

TEST(Overlap, HiddenFraction) {
  EXPECT_DOUBLE_EQ(hidden_fraction({}, {{0, 1}}), 1.0);
  EXPECT_DOUBLE_EQ(hidden_fraction({{0, 2}}, {}), 0.0);
  EXPECT_DOUBLE_EQ(hidden_fraction({{0, 2}, {4, 6}}, {{1, 5}}), 0.5);
  EXPECT_DOUBLE_EQ(hidden_fraction({{1, 2}}, {{0, 3}}), 1.0);
}

std::vector<uint32_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint32_t> v(n);
  uint32_t s = seed;
  for (uint32_t& x : v) x = (s = s * 1664525u + 1013904223u);
  return v;
}

TEST(StagingRing, RoundTripLargerThanTheRing) {
  REQUIRE_GPU();
  exq::cuda::CachingAllocator alloc;
  exq::cuda::Stream compute;
  StagingRing ring(size_t{1} << 20, 3);  // 3 x 1 MiB: a 10 MiB + 12 byte transfer cycles it
  const size_t n = (size_t{10} << 18) + 3;
  const std::vector<uint32_t> host = pattern(n, 7);
  exq::cuda::DeviceTensor a(DType::I32, {static_cast<int64_t>(n)}, alloc, compute);
  exq::cuda::DeviceTensor b(DType::I32, {static_cast<int64_t>(n)}, alloc, compute);
  exq::cuda::Event alloc_done(false), uploaded(false), copied(false);
  alloc_done.record(compute);
  ring.upload(a.raw(), host.data(), n * 4, &alloc_done);
  ring.record(uploaded);
  uploaded.wait_on(compute);
  CUDA_CHECK(cudaMemcpyAsync(b.raw(), a.raw(), n * 4, cudaMemcpyDeviceToDevice, compute));
  copied.record(compute);
  std::vector<uint32_t> back(n, 0);
  ring.download(b.raw(), back.data(), n * 4, &copied);
  ring.flush();
  EXPECT_EQ(back, host);
  EXPECT_EQ(ring.bytes_h2d(), n * 4);
  EXPECT_EQ(ring.bytes_d2h(), n * 4);
  EXPECT_EQ(ring.copy_spans().size(), 2 * ((n * 4 + ring.slot_bytes() - 1) / ring.slot_bytes()));
  EXPECT_GT(ring.copy_spans().total_seconds(), 0.0);
  ring.reset_stats();
  EXPECT_EQ(ring.bytes_h2d(), 0u);
  EXPECT_EQ(ring.copy_spans().size(), 0u);
}

TEST(StagingRing, FillAndDrainSeeOffsetsInOrder) {
  REQUIRE_GPU();
  exq::cuda::CachingAllocator alloc;
  exq::cuda::Stream compute;
  StagingRing ring(4096, 2);
  const size_t bytes = 4096 * 5 + 100;
  exq::cuda::DeviceTensor a(DType::U8, {static_cast<int64_t>(bytes)}, alloc, compute);
  compute.synchronize();
  // The fill writes each byte's offset mod 251, so a misplaced piece shows.
  ring.upload(a.raw(), bytes, [](void* dst, size_t offset, size_t n) {
    auto* p = static_cast<uint8_t*>(dst);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>((offset + i) % 251);
  });
  std::vector<size_t> offsets;
  std::vector<uint8_t> back(bytes);
  exq::cuda::Event up(false);
  ring.record(up);
  ring.download(
      a.raw(), bytes,
      [&](const void* src, size_t offset, size_t n) {
        offsets.push_back(offset);
        std::memcpy(back.data() + offset, src, n);
      },
      &up);
  ring.flush();
  ASSERT_EQ(offsets.size(), 6u);
  for (size_t i = 0; i < offsets.size(); ++i) EXPECT_EQ(offsets[i], i * 4096);
  for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(back[i], (i % 251)) << i;
}

TEST(StagingRing, SpansLineUpWithAnOrigin) {
  REQUIRE_GPU();
  exq::cuda::CachingAllocator alloc;
  exq::cuda::Stream compute;
  StagingRing ring(size_t{1} << 20, 2);
  exq::cuda::Event origin(true);
  origin.record(compute);
  exq::cuda::DeviceTensor a(DType::U8, {int64_t{4} << 20}, alloc, compute);
  std::vector<uint8_t> host(size_t{4} << 20, 3);
  exq::cuda::Event after(false);
  after.record(compute);
  ring.upload(a.raw(), host.data(), host.size(), &after);
  ring.flush();
  CUDA_CHECK(cudaStreamSynchronize(ring.stream()));
  const std::vector<Interval> spans = ring.copy_spans().intervals(origin);
  ASSERT_EQ(spans.size(), 4u);
  for (size_t i = 0; i < spans.size(); ++i) {
    EXPECT_LE(spans[i].begin, spans[i].end);
    if (i > 0) {
      EXPECT_GE(spans[i].begin, spans[i - 1].end - 1e-6);  // one stream: in order
    }
  }
}

}  // namespace
}  // namespace exq::memory::cuda
