#include "backend/cuda/embedding.h"

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"

namespace exq::cuda {

bool embedding_supports(DType table) {
  return table == DType::F16 || table == DType::BF16 || table == DType::F32;
}

void embedding(const DeviceView& ids, const DeviceView& table, const DeviceView& out,
               cudaStream_t stream) {
  constexpr const char* op = "embedding";
  check_dtype(ids, DType::I32, op, "ids");
  check_rank(ids, 1, op, "ids");
  check_dense(ids, op, "ids");
  check_dtype_in(table, {DType::F16, DType::BF16, DType::F32}, op, "table");
  check_rank(table, 2, op, "table");
  check_dense(table, op, "table");
  check_dtype(out, DType::F32, op, "out");
  check_shape(out, {ids.dim(0), table.dim(1)}, op, "out");
  check_dense(out, op, "out");
  const int tokens = checked_int(ids.dim(0), op, "tokens");
  const int vocab = checked_int(table.dim(0), op, "vocab");
  const int dim = checked_int(table.dim(1), op, "dim");
  const auto* id = ids.data<int32_t>();
  switch (table.dtype()) {
    case DType::F16:
      embedding_cuda(id, static_cast<const __half*>(table.raw()), out.data<float>(), tokens,
                     vocab, dim, stream);
      break;
    case DType::BF16:
      embedding_cuda(id, static_cast<const __nv_bfloat16*>(table.raw()), out.data<float>(),
                     tokens, vocab, dim, stream);
      break;
    default:
      embedding_cuda(id, table.data<float>(), out.data<float>(), tokens, vocab, dim, stream);
      break;
  }
}

}  // namespace exq::cuda
