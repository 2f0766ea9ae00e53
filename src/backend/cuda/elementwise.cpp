#include "backend/cuda/elementwise.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"

namespace exq::cuda {

void swiglu(const DeviceView& gate, const DeviceView& up, const DeviceView& out,
            cudaStream_t stream, bool gelu) {
  const char* op = gelu ? "geglu" : "swiglu";
  check_dtype(gate, DType::F32, op, "gate");
  check_dense(gate, op, "gate");
  check_dtype(up, DType::F32, op, "up");
  check_shape(up, gate.shape(), op, "up");
  check_dense(up, op, "up");
  check_dtype(out, DType::F32, op, "out");
  check_shape(out, gate.shape(), op, "out");
  check_dense(out, op, "out");
  (gelu ? geglu_cuda : swiglu_cuda)(gate.data<float>(), up.data<float>(), out.data<float>(), gate.numel(), stream);
}

void residual_add(const DeviceView& residual, const DeviceView& delta, cudaStream_t stream) {
  constexpr const char* op = "residual_add";
  check_dtype(residual, DType::F32, op, "residual");
  check_dense(residual, op, "residual");
  check_dtype(delta, DType::F32, op, "delta");
  check_shape(delta, residual.shape(), op, "delta");
  check_dense(delta, op, "delta");
  residual_add_cuda(residual.data<float>(), delta.data<float>(), residual.numel(), stream);
}

bool to_f32_supports(DType src) {
  return src == DType::F32 || src == DType::F16 || src == DType::BF16;
}

void to_f32(const DeviceView& src, const DeviceView& dst, cudaStream_t stream) {
  constexpr const char* op = "to_f32";
  check_dtype_in(src, {DType::F32, DType::F16, DType::BF16}, op, "src");
  check_dense(src, op, "src");
  check_dtype(dst, DType::F32, op, "dst");
  check_shape(dst, src.shape(), op, "dst");
  check_dense(dst, op, "dst");
  switch (src.dtype()) {
    case DType::F16:
      to_f32_cuda(static_cast<const __half*>(src.raw()), dst.data<float>(), src.numel(), stream);
      break;
    case DType::BF16:
      to_f32_cuda(static_cast<const __nv_bfloat16*>(src.raw()), dst.data<float>(), src.numel(),
                  stream);
      break;
    default:
      to_f32_cuda(src.data<float>(), dst.data<float>(), src.numel(), stream);
      break;
  }
}

}  // namespace exq::cuda
