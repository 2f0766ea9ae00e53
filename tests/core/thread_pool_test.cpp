#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
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

// Loops from several threads at once (exq serve --parallel), and a loop started inside a
// loop: each covers its range exactly once.
TEST(ThreadPool, ConcurrentAndNestedCallers) {
  const int before = num_threads();
  set_num_threads(4);
  constexpr int kCallers = 6, kRounds = 200;
  std::vector<std::thread> callers;
  std::atomic<int> wrong = 0;
  for (int c = 0; c < kCallers; ++c)
    callers.emplace_back([&, c] {
      for (int r = 0; r < kRounds; ++r) {
        const int64_t n = 50 + c * 7 + r % 13;
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        parallel_for(n, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        for (auto& h : hits) wrong += h.load() != 1;
      }
    });
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  std::atomic<int64_t> sum = 0;
  parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      parallel_for(10, [&](int64_t x, int64_t y) { for (int64_t j = x; j < y; ++j) sum += i * 10 + j; });
  });
  EXPECT_EQ(sum.load(), 79 * 80 / 2);
  set_num_threads(before);
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
