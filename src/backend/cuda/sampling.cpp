#include "backend/cuda/sampling.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {

void argmax(const DeviceView& logits, const DeviceView& out, cudaStream_t stream) {
  constexpr const char* op = "argmax";
  check_dtype(logits, DType::F32, op, "logits");
  EXQ_CHECK(logits.rank() == 1 || logits.rank() == 2,
            "cuda argmax: logits must be [vocab] or [rows, vocab], got {}",
            shape_str(logits.shape()));
  check_dense(logits, op, "logits");
  const int64_t vocab = logits.dim(-1);
  const int64_t rows = logits.rank() == 2 ? logits.dim(0) : 1;
  EXQ_CHECK(vocab > 0, "cuda argmax: empty vocabulary");
  check_dtype(out, DType::I32, op, "out");
  check_shape(out, {rows}, op, "out");
  check_dense(out, op, "out");
  argmax_cuda(logits.data<float>(), out.data<int32_t>(), checked_int(rows, op, "rows"),
              checked_int(vocab, op, "vocab"), stream);
}

}  // namespace exq::cuda
