#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace exq {
namespace {

TEST(ThreadPool, CoversRangeExactlyOnce) {
  for (int64_t n : {0, 1, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, PropagatesExceptions) {
  EXPECT_THROW(parallel_for(100, [](int64_t b, int64_t) {
                 if (b > 0) throw std::runtime_error("x");
               }),
               std::runtime_error);
  // The pool keeps working afterwards.
  std::atomic<int64_t> sum = 0;
  parallel_for(10, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
  EXPECT_EQ(sum.load(), 45);
}

}  // namespace
}  // namespace exq

namespace exq {
namespace {

TEST(ThreadPool, ResizeAfterUseRunsOnlyNewWork) {
  std::atomic<int64_t> sum = 0;
  parallel_for(100, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
  const int before = num_threads();
  for (int n : {3, 1, 4}) {
    set_num_threads(n);
    EXPECT_EQ(num_threads(), n);
    sum = 0;
    parallel_for(100, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) sum += i; });
    EXPECT_EQ(sum.load(), 4950);
  }
  set_num_threads(before);
}

}  // namespace
}  // namespace exq
