// A fixed pool of worker threads for data-parallel loops (parallel_for). One pool per
// process; the CLI sets its size from --threads. Thread-safe: a loop started while another
// caller's loop has the workers runs on its own thread alone. set_num_threads() must not
// overlap a loop.
#pragma once

#include <cstdint>
#include <functional>

namespace exq {

// Number of worker threads (default: hardware concurrency, or EXQ_THREADS).
int num_threads();
void set_num_threads(int n);

// Runs fn(begin, end) over [0, n) split into contiguous chunks across the pool; blocks until
// all chunks are done. Exceptions thrown by fn are rethrown here (the first one).
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

}  // namespace exq
