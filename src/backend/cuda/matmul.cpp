#include "backend/cuda/matmul.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

constexpr size_t kScratchAlign = 256;  // cuBLAS prefers 256-byte aligned operands

size_t scale_offset(int64_t rows, int64_t in_features) {
  const size_t x_bytes = static_cast<size_t>(rows) * static_cast<size_t>(in_features) * 2;
  return (x_bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
}

}  // namespace

bool matmul_supports(DType weight) { return weight == DType::F16 || weight == DType::BF16; }

bool matmul_copies_fit(int64_t in_features) {
  return static_cast<size_t>(in_features) <= matmul_max_copied_in();
}

size_t matmul_workspace_bytes(int64_t rows, int64_t in_features) {
  return scale_offset(rows, in_features) + static_cast<size_t>(rows) * sizeof(float);
}

void matmul(CublasHandle& cublas, const DeviceView& x, const DeviceView& w, const DeviceView& y,
            const DeviceView& workspace, cudaStream_t stream, const int32_t* x_perm,
            const DeviceView* up, bool gelu) {
  constexpr const char* op = "matmul";
  check_dtype(x, DType::F32, op, "x");
  check_rank(x, 2, op, "x");
  check_dense(x, op, "x");
  check_dtype_in(w, {DType::F16, DType::BF16}, op, "w");
  check_rank(w, 2, op, "w");
  check_dense(w, op, "w");
  EXQ_CHECK(w.dim(1) == x.dim(1), "cuda matmul: w {} has {} input features, x {} has {}",
            shape_str(w.shape()), w.dim(1), shape_str(x.shape()), x.dim(1));
  check_dtype(y, DType::F32, op, "y");
  check_shape(y, {x.dim(0), w.dim(0)}, op, "y");
  check_dense(y, op, "y");
  check_dense(workspace, op, "workspace");
  if (up != nullptr) {
    check_dtype(*up, DType::F32, op, "up");
    check_shape(*up, x.shape(), op, "up");
    check_dense(*up, op, "up");
  }
  EXQ_CHECK((x_perm == nullptr && up == nullptr) || matmul_copies_fit(x.dim(1)),
            "cuda matmul: a permuted or SwiGLU input of {} features exceeds the {} a block's "
            "shared memory holds",
            x.dim(1), matmul_max_copied_in());
  const size_t need = matmul_workspace_bytes(x.dim(0), x.dim(1));
  EXQ_CHECK(workspace.nbytes() >= need, "cuda matmul: workspace has {} bytes, needs {}",
            workspace.nbytes(), need);
  const int rows = checked_int(x.dim(0), op, "rows");
  const int n = checked_int(w.dim(0), op, "out_features");
  const int k = checked_int(x.dim(1), op, "in_features");
  auto* base = static_cast<char*>(workspace.raw());
  auto* row_scale = reinterpret_cast<float*>(base + scale_offset(rows, k));
  const float* up_data = up != nullptr ? up->data<float>() : nullptr;
  cublas.set_stream(stream);
  if (w.dtype() == DType::F16)
    matmul_cuda(cublas.get(), x.data<float>(), static_cast<const __half*>(w.raw()),
                y.data<float>(), reinterpret_cast<__half*>(base), row_scale, rows, n, k, stream,
                x_perm, up_data, gelu);
  else
    matmul_cuda(cublas.get(), x.data<float>(), static_cast<const __nv_bfloat16*>(w.raw()),
                y.data<float>(), reinterpret_cast<__nv_bfloat16*>(base), row_scale, rows, n, k,
                stream, x_perm, up_data, gelu);
}

}  // namespace exq::cuda
