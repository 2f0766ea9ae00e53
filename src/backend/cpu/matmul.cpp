#include "backend/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/matmul_kernel.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

struct Operands {
  const float* x;
  int64_t ldx;
  int64_t T;
  const void* w;
  DType wtype;
  int64_t out;
  int64_t in;
  float* y;
  int64_t ldy;
};

int64_t row_stride(const TensorView& v) { return v.strides()[0]; }

Operands check(const TensorView& x, const TensorView& w, const TensorView& y) {
  EXQ_CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2,
            "matmul: expected 2-D x, w, y, got {} {} {}", shape_str(x.shape()),
            shape_str(w.shape()), shape_str(y.shape()));
  EXQ_CHECK(x.dtype() == DType::F32 && y.dtype() == DType::F32,
            "matmul: x and y must be F32, got {} and {}", dtype_name(x.dtype()), dtype_name(y.dtype()));
  EXQ_CHECK(w.dtype() == DType::F32 || w.dtype() == DType::F16 || w.dtype() == DType::BF16,
            "matmul: unsupported weight dtype {} on CPU", dtype_name(w.dtype()));
  EXQ_CHECK(w.is_contiguous(), "matmul: weight {} must be contiguous", shape_str(w.shape()));
  const int64_t T = x.dim(0), in = x.dim(1), out = w.dim(0);
  EXQ_CHECK(w.dim(1) == in && y.dim(0) == T && y.dim(1) == out,
            "matmul: shapes x {} w {} y {} do not match (want x [T, in], w [out, in], y [T, out])",
            shape_str(x.shape()), shape_str(w.shape()), shape_str(y.shape()));
  EXQ_CHECK((in <= 1 || x.strides()[1] == 1) && (out <= 1 || y.strides()[1] == 1) &&
                (T <= 1 || (row_stride(x) >= in && row_stride(y) >= out)),
            "matmul: x and y rows must be contiguous");
  return Operands{x.data<float>(), T <= 1 ? in : row_stride(x), T, w.raw(), w.dtype(),
                  out, in, y.data<float>(), T <= 1 ? out : row_stride(y)};
}

// Output rows per task: a tile of f32 weights (converted from 16 bits when needed) stays
// around 128 KiB so it is reread from L2 for every block of x rows; and there are at least
// four tasks per thread so uneven shapes (192 rows on 2..16 threads) still balance.
int64_t tile_rows(int64_t out, int64_t in) {
  const int64_t by_cache = std::max<int64_t>(3, (32768 / std::max<int64_t>(in, 1)) / 3 * 3);
  const int64_t tasks = 4 * static_cast<int64_t>(num_threads());
  const int64_t by_balance = std::max<int64_t>(3, (out + tasks - 1) / tasks / 3 * 3 + 3);
  return std::min(by_cache, by_balance);
}

const float* w_f32_rows(const Operands& op, int64_t row) {
  return static_cast<const float*>(op.w) + row * op.in;
}
const uint16_t* w_16_rows(const Operands& op, int64_t row) {
  return static_cast<const uint16_t*>(op.w) + row * op.in;
}

// Returns the f32 rows [o0, o0 + n) of the weight: the original memory for f32 weights, or
// a conversion into this thread's buffer.
const float* f32_tile(const Operands& op, int64_t o0, int64_t n) {
  if (op.wtype == DType::F32) return w_f32_rows(op, o0);
  thread_local std::vector<float> buffer;
  if (buffer.size() < static_cast<size_t>(n * op.in)) buffer.resize(static_cast<size_t>(n * op.in));
  kernel::convert_rows(w_16_rows(op, o0), op.wtype, n, op.in, buffer.data());
  return buffer.data();
}

// Below this many rows of x, 16-bit weights are converted in registers (each weight is used
// by few rows, so a converted tile would not be reused enough to pay for its store).
constexpr int64_t kDirectMaxT = 4;

void run_kernel(const Operands& op) {
  const int64_t rows = tile_rows(op.out, op.in);
  const int64_t tiles = (op.out + rows - 1) / rows;
  parallel_for(tiles, [&](int64_t b, int64_t e) {
    for (int64_t tile = b; tile < e; ++tile) {
      const int64_t o0 = tile * rows, n = std::min(rows, op.out - o0);
      if (op.wtype != DType::F32 && op.T <= kDirectMaxT) {
        kernel::gemm(op.x, op.ldx, op.T, w_16_rows(op, o0), op.wtype, n, op.in, op.y + o0, op.ldy);
      } else {
        kernel::gemm(op.x, op.ldx, op.T, f32_tile(op, o0, n), DType::F32, n, op.in, op.y + o0, op.ldy);
      }
    }
  });
}

// OpenBLAS keeps one global thread count; switch it only when it changes.
void set_blas_threads(int n) {
  static int current = -1;
  if (current != n) {
    openblas_set_num_threads(n);
    current = n;
  }
}

void blas_tile(const Operands& op, const float* w, int64_t o0, int64_t n) {
  if (op.T == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(op.in), 1.0f, w,
                static_cast<int>(op.in), op.x, 1, 0.0f, op.y + o0, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(op.T), static_cast<int>(n),
                static_cast<int>(op.in), 1.0f, op.x, static_cast<int>(op.ldx), w,
                static_cast<int>(op.in), 0.0f, op.y + o0, static_cast<int>(op.ldy));
  }
}

void run_blas(const Operands& op) {
  set_blas_threads(1);
  const int64_t rows = tile_rows(op.out, op.in);
  const int64_t tiles = (op.out + rows - 1) / rows;
  parallel_for(tiles, [&](int64_t b, int64_t e) {
    for (int64_t tile = b; tile < e; ++tile) {
      const int64_t o0 = tile * rows, n = std::min(rows, op.out - o0);
      blas_tile(op, f32_tile(op, o0, n), o0, n);
    }
  });
}

void run_blas_threaded(const Operands& op) {
  EXQ_CHECK(op.wtype == DType::F32, "matmul: BlasThreaded needs F32 weights, got {}",
            dtype_name(op.wtype));
  set_blas_threads(num_threads());
  blas_tile(op, static_cast<const float*>(op.w), 0, op.out);
}

}  // namespace

const char* matmul_isa() { return kernel::isa_name(kernel::active_isa()); }

void matmul(const TensorView& x, const TensorView& w, const TensorView& y, MatmulImpl impl) {
  const Operands op = check(x, w, y);
  if (op.T == 0 || op.out == 0) return;
  if (op.in == 0) {
    for (int64_t t = 0; t < op.T; ++t) std::fill_n(op.y + t * op.ldy, op.out, 0.0f);
    return;
  }
  EXQ_CHECK(op.in <= (1 << 30) && op.out <= (1 << 30) && op.T <= (1 << 30),
            "matmul: dimensions too large for BLAS ({})", shape_str(w.shape()));
  switch (impl) {
    // Auto is exq's kernel on the file dtype, by measurement (bench/matmul_bench, SmolLM2
    // shapes, one core of an AMD EPYC Zen 5, GFLOP/s per CPU-second): at T=512 the AVX-512
    // kernel runs 168-207 (f16 weights) / 163-227 (f32), OpenBLAS 0.3.21 (which only has a
    // Haswell AVX2 sgemm for this CPU) 109-126, the AVX2 kernel 104-117. At T=1 the model does
    // not fit any cache and is memory-bound: f16 weights in place read half the bytes and beat
    // f32 weights (and OpenBLAS sgemv) on every shape, e.g. the 49152x576 head 18.0 vs 15.0 (f32
    // kernel) vs 14.5 (OpenBLAS). Converting the model to f32 at load would win ~5-10% at T=512
    // (no tile conversion) but lose more at decode and double the memory, so weights stay in
    // their file dtype. OpenBLAS stays single-threaded: its own threading was not faster.
    case MatmulImpl::Auto:
    case MatmulImpl::Kernel: return run_kernel(op);
    case MatmulImpl::Blas: return run_blas(op);
    case MatmulImpl::BlasThreaded: return run_blas_threaded(op);
  }
}

void add_bias(const TensorView& y, const TensorView& b) {
  EXQ_CHECK(y.rank() == 2 && y.dtype() == DType::F32 && b.rank() == 1 && b.dim(0) == y.dim(1),
            "add_bias: expected y F32 [T, n] and b [n], got {} {}", shape_str(y.shape()),
            shape_str(b.shape()));
  EXQ_CHECK(y.dim(1) <= 1 || y.strides()[1] == 1, "add_bias: y rows must be contiguous");
  const Tensor bf = to_f32(b);
  const float* bp = bf.data<float>();
  float* yp = y.data<float>();
  for (int64_t t = 0; t < y.dim(0); ++t)
    for (int64_t o = 0; o < y.dim(1); ++o) yp[t * y.strides()[0] + o] += bp[o];
}

}  // namespace exq::cpu
