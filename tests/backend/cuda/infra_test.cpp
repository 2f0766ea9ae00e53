// Error macros, device queries, buffers, streams, events, the caching allocator and cuBLAS.
#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>

#include "backend/cuda/cublas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/memory.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class CudaInfra : public CudaTest {};
using test::expect_error;

cudaError_t fail_with(cudaError_t status) { return status; }

TEST(CudaCheck, ThrowsWithStatementAndLocation) {
  try {
    CUDA_CHECK(fail_with(cudaErrorInvalidValue));
    FAIL() << "CUDA_CHECK did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("CUDA error cudaErrorInvalidValue"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fail_with(cudaErrorInvalidValue)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("infra_test.cpp:"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(CUDA_CHECK(fail_with(cudaSuccess)));
}

TEST(CudaCheck, CublasThrowsWithStatusName) {
  try {
    CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE);
    FAIL() << "CUBLAS_CHECK did not throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << msg;
    EXPECT_NE(msg.find("infra_test.cpp:"), std::string::npos) << msg;
  }
  EXPECT_STREQ(cublas_status_name(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
}

TEST(Device, DescribeDevicesNeverThrows) {
  std::string text;
  ASSERT_NO_THROW(text = describe_devices());
  EXPECT_NE(text.find("CUDA runtime"), std::string::npos) << text;
  if (device_count() == 0)
    EXPECT_NE(text.find("no CUDA device"), std::string::npos) << text;
  else
    EXPECT_NE(text.find("cuda:0 "), std::string::npos) << text;
}

TEST(Device, RequireDeviceGivesClearError) {
  if (device_count() == 0) {
    expect_error([] { require_device(); }, "no CUDA device available");
    return;
  }
  const DeviceInfo info = device_info(0);
  if (info.cc_major < kMinComputeMajor) {
    expect_error([] { require_device(); }, "needs 8.0 or newer");
    return;
  }
  const DeviceInfo got = require_device(0);
  EXPECT_EQ(got.name, info.name);
  EXPECT_GE(got.cc_major, kMinComputeMajor);
  EXPECT_GT(got.total_memory, size_t{0});
  EXPECT_GT(got.sm_count, 0);
}

TEST(Device, InvalidIndexThrows) {
  expect_error([] { device_info(-1); }, "does not exist");
  expect_error([] { device_info(device_count()); }, "does not exist");
  expect_error([] { require_device(device_count() + 3); }, "CUDA device");
}

TEST(Buffers, AreMoveOnly) {
  static_assert(!std::is_copy_constructible_v<DeviceBuffer>);
  static_assert(!std::is_copy_assignable_v<DeviceBuffer>);
  static_assert(std::is_nothrow_move_constructible_v<DeviceBuffer>);
  static_assert(!std::is_copy_constructible_v<PinnedBuffer>);
  static_assert(!std::is_copy_constructible_v<Stream>);
  static_assert(!std::is_copy_constructible_v<Event>);
  static_assert(!std::is_copy_constructible_v<CublasHandle>);
  static_assert(!std::is_copy_constructible_v<DeviceTensor>);
  static_assert(!std::is_copy_constructible_v<CachingAllocator>);
  DeviceBuffer empty;
  EXPECT_TRUE(empty.empty());
  DeviceBuffer zero(0);  // no device needed for an empty buffer
  EXPECT_TRUE(zero.empty());
}

TEST(Allocator, RoundsSizes) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) - 1), 1u << 20);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(CachingAllocator::round_size((3u << 20)), 4u << 20);
}

TEST(Allocator, BudgetExceededThrowsBeforeTouchingTheDevice) {
  CachingAllocator alloc(size_t{1} << 30);
  expect_error([&] { alloc.allocate(size_t{3} << 30); },
               "VRAM budget of 1.07 GB exceeded: allocating 3072.0 MiB");
  EXPECT_EQ(alloc.reserved(), 0u);
  EXPECT_EQ(alloc.in_use(), 0u);
}

TEST(DeviceTensor, CopyChecksShapesWithoutADevice) {
  Tensor host(DType::F32, {4, 3});
  expect_error([&] { copy_to_device(host.view(), test::fake_view(DType::F32, {4, 4}), nullptr); },
               "does not match");
  expect_error([&] { copy_to_host(test::fake_view(DType::F16, {4, 3}), host.view(), nullptr); },
               "does not match");
}

TEST_F(CudaInfra, DeviceBufferAllocatesAndMoves) {
  DeviceBuffer a(1000);
  ASSERT_FALSE(a.empty());
  void* p = a.data();
  DeviceBuffer b(std::move(a));
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 1000u);
  CUDA_CHECK(cudaMemset(b.data(), 0, b.size()));
  b.reset();
  EXPECT_TRUE(b.empty());
}

TEST_F(CudaInfra, AllocatorReusesBlocksAndTracksPeaks) {
  CachingAllocator a;
  void* first = nullptr;
  {
    DeviceBuffer x = a.allocate(3000, stream());
    first = x.data();
    EXPECT_EQ(a.in_use(), 3072u);
    DeviceBuffer y = a.allocate(size_t{5} << 20, stream());
    EXPECT_EQ(a.in_use(), 3072u + (size_t{6} << 20));
  }
  EXPECT_EQ(a.in_use(), 0u);
  EXPECT_EQ(a.peak_in_use(), 3072u + (size_t{6} << 20));
  const size_t reserved = a.reserved();
  DeviceBuffer again = a.allocate(2900, stream());
  EXPECT_EQ(again.data(), first);  // served from the cache
  EXPECT_EQ(a.reserved(), reserved);
  Stream other;
  DeviceBuffer other_stream = a.allocate(3000, other.get());
  EXPECT_NE(other_stream.data(), first);  // blocks are not shared across streams
  a.reset_peaks();
  EXPECT_EQ(a.peak_in_use(), a.in_use());
  EXPECT_NE(a.stats().find("in use"), std::string::npos);
}

TEST_F(CudaInfra, AllocatorBudgetCountsLiveAndFreesCacheWhenNeeded) {
  CachingAllocator a(size_t{8} << 20);
  DeviceBuffer x = a.allocate(size_t{6} << 20, stream());
  expect_error([&] { a.allocate(size_t{4} << 20, stream()); }, "VRAM budget of 0.01 GB exceeded");
  x.reset();  // cached, still reserved
  EXPECT_EQ(a.reserved(), size_t{6} << 20);
  DeviceBuffer y = a.allocate(size_t{4} << 20, stream());  // evicts the cached 6 MiB block
  EXPECT_EQ(a.reserved(), size_t{4} << 20);
  EXPECT_EQ(a.peak_reserved(), size_t{6} << 20);
  y.reset();
  a.empty_cache();
  EXPECT_EQ(a.reserved(), 0u);
}

TEST_F(CudaInfra, PinnedRoundTripWithEvents) {
  const size_t n = 1 << 20;
  PinnedBuffer src(n * sizeof(float)), dst(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) src.as<float>()[i] = static_cast<float>(i) * 0.5f;
  DeviceBuffer dev = alloc().allocate(n * sizeof(float), stream());
  Event start, done;
  start.record(stream());
  CUDA_CHECK(cudaMemcpyAsync(dev.data(), src.data(), src.size(), cudaMemcpyHostToDevice, stream()));
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), dev.data(), dst.size(), cudaMemcpyDeviceToHost, stream()));
  done.record(stream());
  done.synchronize();
  EXPECT_TRUE(done.done());
  EXPECT_GE(Event::elapsed_ms(start, done), 0.0f);
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), src.size()), 0);
}

TEST_F(CudaInfra, EventOrdersStreams) {
  Stream other;
  Tensor host = test::random_f32({1000}, 7);
  DeviceTensor a = upload(host);
  DeviceTensor b = empty(DType::F32, {1000});
  Event ready(false);
  ready.record(stream());
  ready.wait_on(other.get());
  copy_device(a.view(), b.view(), other.get());
  other.synchronize();
  Tensor back = to_host(b.view(), other.get());
  EXPECT_EQ(std::memcmp(back.raw(), host.raw(), host.nbytes()), 0);
}

TEST_F(CudaInfra, DeviceTensorRoundTrip) {
  Tensor host = test::random_half(DType::F16, {3, 5, 7}, 11);
  DeviceTensor dev = upload(host);
  EXPECT_EQ(dev.shape(), host.shape());
  EXPECT_EQ(dev.dtype(), DType::F16);
  Tensor back = download(dev.view().slice0(1, 3));
  EXPECT_EQ(std::memcmp(back.raw(), host.data<uint16_t>() + 35, back.nbytes()), 0);
}

TEST_F(CudaInfra, CublasHandleBindsStreams) {
  CublasHandle h;
  ASSERT_NE(h.get(), nullptr);
  h.set_stream(stream());
  cudaStream_t bound = nullptr;
  CUBLAS_CHECK(cublasGetStream(h.get(), &bound));
  EXPECT_EQ(bound, stream());
  CublasHandle moved(std::move(h));
  EXPECT_EQ(h.get(), nullptr);
  EXPECT_NE(moved.get(), nullptr);
}

}  // namespace
}  // namespace exq::cuda
