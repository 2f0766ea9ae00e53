#include "backend/cuda/norm.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {

bool rmsnorm_supports(DType weight) {
  return weight == DType::F32 || weight == DType::F16 || weight == DType::BF16;
}

void rmsnorm(const DeviceView& x, const DeviceView& weight, const DeviceView& out, float eps,
             cudaStream_t stream) {
  constexpr const char* op = "rmsnorm";
  check_dtype(x, DType::F32, op, "x");
  check_rank(x, 2, op, "x");
  check_dense(x, op, "x");
  check_dtype_in(weight, {DType::F32, DType::F16, DType::BF16}, op, "weight");
  check_shape(weight, {x.dim(1)}, op, "weight");
  check_dense(weight, op, "weight");
  check_dtype(out, DType::F32, op, "out");
  check_shape(out, x.shape(), op, "out");
  check_dense(out, op, "out");
  EXQ_CHECK(eps > 0.0f, "cuda rmsnorm: eps must be positive, got {}", eps);
  const int rows = checked_int(x.dim(0), op, "rows");
  const int dim = checked_int(x.dim(1), op, "dim");
  switch (weight.dtype()) {
    case DType::F32:
      rmsnorm_cuda(x.data<float>(), weight.data<float>(), out.data<float>(), rows, dim, eps, stream);
      break;
    case DType::F16:
      rmsnorm_cuda(x.data<float>(), static_cast<const __half*>(weight.raw()), out.data<float>(),
                   rows, dim, eps, stream);
      break;
    default:
      rmsnorm_cuda(x.data<float>(), static_cast<const __nv_bfloat16*>(weight.raw()),
                   out.data<float>(), rows, dim, eps, stream);
      break;
  }
}

}  // namespace exq::cuda
