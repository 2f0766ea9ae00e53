#include "backend/cuda/sampling.h"

#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

// [vocab] or [1, vocab] F32, dense; returns vocab.
int check_logits_row(const DeviceView& logits, const char* op) {
  check_dtype(logits, DType::F32, op, "logits");
  EXQ_CHECK((logits.rank() == 1 || (logits.rank() == 2 && logits.dim(0) == 1)) && logits.dim(-1) > 0,
            "cuda {}: logits must be [vocab] or [1, vocab] with vocab > 0, got {}", op,
            shape_str(logits.shape()));
  check_dense(logits, op, "logits");
  return checked_int(logits.dim(-1), op, "vocab");
}

}  // namespace

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

size_t sample_workspace_bytes(int64_t vocab) {
  return sample_workspace_bytes_for(checked_int(vocab, "sample", "vocab"));
}

void sample(const DeviceView& logits, const SamplingParams& params, double uniform,
            const DeviceView& seen, const DeviceView& workspace, const DeviceView& out,
            cudaStream_t stream) {
  constexpr const char* op = "sample";
  const int vocab = check_logits_row(logits, op);
  if (!seen.empty()) {
    check_dtype(seen, DType::U8, op, "seen");
    check_shape(seen, {vocab}, op, "seen");
    check_dense(seen, op, "seen");
  }
  check_dtype(workspace, DType::U8, op, "workspace");
  check_dense(workspace, op, "workspace");
  EXQ_CHECK(workspace.nbytes() >= sample_workspace_bytes_for(vocab),
            "cuda sample: workspace has {} bytes, needs {}", workspace.nbytes(),
            sample_workspace_bytes_for(vocab));
  check_dtype(out, DType::I32, op, "out");
  check_shape(out, {1}, op, "out");
  check_dense(out, op, "out");
  SampleParams p;
  p.greedy = params.greedy() ? 1 : 0;
  if (!p.greedy) {
    EXQ_CHECK(params.temperature > 0.0f && params.top_p > 0.0f && params.min_p <= 1.0f &&
                  params.repetition_penalty > 0.0f,
              "cuda sample: temperature {}, top-p {}, min-p {}, repetition penalty {} out of range",
              params.temperature, params.top_p, params.min_p, params.repetition_penalty);
    EXQ_CHECK(uniform >= 0.0 && uniform < 1.0, "cuda sample: uniform {} is not in [0, 1)", uniform);
  }
  p.temperature = params.temperature;
  p.top_k = params.top_k;
  p.top_p = params.top_p;
  p.min_p = params.min_p;
  p.penalty = params.repetition_penalty;
  p.uniform = uniform;
  sample_cuda(logits.data<float>(), seen.empty() ? nullptr : seen.data<uint8_t>(), vocab, p,
              workspace.raw(), out.data<int32_t>(), stream);
}

int32_t sampled_token(int32_t token) {
  EXQ_CHECK(token != kSampleNonFinite,
            "logits contain NaN or +Inf (the model produced non-finite values)");
  EXQ_CHECK(token >= 0, "every logit is -inf: nothing to sample");
  return token;
}

void token_logprob(const DeviceView& logits, const DeviceView& token, int top_n, LogprobOut* out,
                   cudaStream_t stream) {
  constexpr const char* op = "token_logprob";
  check_dtype(logits, DType::F32, op, "logits");
  EXQ_CHECK((logits.rank() == 1 || logits.rank() == 2) && logits.dim(-1) > 0,
            "cuda token_logprob: logits must be [vocab] or [rows, vocab], got {}", shape_str(logits.shape()));
  check_dense(logits, op, "logits");
  const int64_t rows = logits.rank() == 2 ? logits.dim(0) : 1;
  check_dtype(token, DType::I32, op, "token");
  check_shape(token, {rows}, op, "token");
  check_dense(token, op, "token");
  EXQ_CHECK(top_n >= 0 && top_n <= kLogprobTopMax, "cuda token_logprob: top_n {} outside 0..{}", top_n,
            kLogprobTopMax);
  EXQ_CHECK(out != nullptr, "cuda token_logprob: no output");
  token_logprob_cuda(logits.data<float>(), checked_int(rows, op, "rows"), checked_int(logits.dim(-1), op, "vocab"),
                     token.data<int32_t>(), top_n, out, stream);
}

void adjust_logits(const DeviceView& logits, const LogitAdjust& adjust, const DeviceView& out,
                   cudaStream_t stream) {
  constexpr const char* op = "adjust_logits";
  const int vocab = check_logits_row(logits, op);
  check_dtype(out, DType::F32, op, "out");
  EXQ_CHECK(out.numel() == vocab, "cuda adjust_logits: out has {} values for a vocabulary of {}", out.numel(), vocab);
  check_dense(out, op, "out");
  auto optional = [&](const DeviceView& v, DType dtype, const char* arg) {
    if (v.empty()) return;
    check_dtype(v, dtype, op, arg);
    check_shape(v, {vocab}, op, arg);
    check_dense(v, op, arg);
  };
  optional(adjust.bias, DType::F32, "bias");
  optional(adjust.counts, DType::I32, "counts");
  optional(adjust.allowed, DType::U8, "allowed");
  EXQ_CHECK(out.raw() != logits.raw(), "cuda adjust_logits: out must not alias the logits");
  adjust_logits_cuda(logits.data<float>(), vocab, adjust.bias.empty() ? nullptr : adjust.bias.data<float>(),
                     adjust.counts.empty() ? nullptr : adjust.counts.data<int32_t>(), adjust.presence,
                     adjust.frequency, adjust.allowed.empty() ? nullptr : adjust.allowed.data<uint8_t>(),
                     out.data<float>(), stream);
}

void count_token(const DeviceView& token, const DeviceView& counts, cudaStream_t stream) {
  constexpr const char* op = "count_token";
  check_dtype(token, DType::I32, op, "token");
  check_shape(token, {1}, op, "token");
  check_dtype(counts, DType::I32, op, "counts");
  check_rank(counts, 1, op, "counts");
  check_dense(counts, op, "counts");
  count_token_cuda(token.data<int32_t>(), counts.data<int32_t>(), checked_int(counts.dim(0), op, "vocab"), stream);
}

void mark_seen(const DeviceView& ids, const DeviceView& seen, cudaStream_t stream) {
  constexpr const char* op = "mark_seen";
  check_dtype(ids, DType::I32, op, "ids");
  check_rank(ids, 1, op, "ids");
  check_dense(ids, op, "ids");
  check_dtype(seen, DType::U8, op, "seen");
  check_rank(seen, 1, op, "seen");
  check_dense(seen, op, "seen");
  mark_seen_cuda(ids.data<int32_t>(), checked_int(ids.dim(0), op, "ids"), seen.data<uint8_t>(),
                 checked_int(seen.dim(0), op, "vocab"), stream);
}

}  // namespace exq::cuda
