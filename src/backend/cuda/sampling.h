// Sampling on the device, so a decode loop can feed the token back to the embedding without a
// host round trip: greedy argmax, and the full sampler with exactly runtime::Sampler's
// semantics (repetition penalty, temperature, top-k, top-p, min-p, then the draw of one
// uniform number; see sampling.cu for where the double sums may differ in the last bit).
// Launchers: argmax_cuda, sample_cuda, mark_seen_cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/launchers.h"

namespace exq::cuda {

// logits: [vocab] or [rows, vocab] F32; out: [rows] I32 (rows = 1 for 1-D logits). The first
// maximum wins on ties; NaN logits are ignored.
void argmax(const DeviceView& logits, const DeviceView& out, cudaStream_t stream);

// runtime::SamplerConfig's settings for one draw (the runtime fills it from the config).
struct SamplingParams {
  float temperature = 0.8f;         // <= 0: greedy
  int top_k = 40;                   // <= 0: off; 1: greedy
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off
  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

// Bytes of scratch sample() needs for a vocabulary of `vocab` tokens.
size_t sample_workspace_bytes(int64_t vocab);

// out[0] = the token the CPU sampler would pick from logits [vocab] (or [1, vocab]) F32 with the
// uniform number `uniform` (unused when greedy), or kSampleNonFinite / kSampleNothing when the
// CPU sampler would throw (sampled_token() turns those into its errors). seen: [vocab] U8 flags
// of the tokens the repetition penalty applies to, or an empty view. workspace: U8, at least
// sample_workspace_bytes(vocab). One block; no host synchronization.
void sample(const DeviceView& logits, const SamplingParams& params, double uniform,
            const DeviceView& seen, const DeviceView& workspace, const DeviceView& out,
            cudaStream_t stream);

// Returns `token` read back from sample(), or throws the CPU sampler's exq::Error for a code.
int32_t sampled_token(int32_t token);

// Per row r of logits [vocab] or [rows, vocab] F32: the log-softmax at the id in token[r]
// ([rows] I32 on the device, e.g. what sample() wrote) and the top_n (<= kLogprobTopMax)
// likeliest tokens, into out[r] (device memory; LogprobOut is in launchers.h). A block per
// row, no host synchronization. An id outside the vocabulary gives a NaN logprob.
void token_logprob(const DeviceView& logits, const DeviceView& token, int top_n, LogprobOut* out,
                   cudaStream_t stream);

// What runtime::Sampler does to the logits before its repetition penalty: a bias, OpenAI's
// presence / frequency penalties over per-token counts, a mask of allowed tokens. Each view is
// empty (off) or [vocab]: bias F32, counts I32, allowed U8.
struct LogitAdjust {
  DeviceView bias;
  DeviceView counts;
  float presence = 0.0f;
  float frequency = 0.0f;
  DeviceView allowed;
};

// out = logits [vocab] or [1, vocab] F32 adjusted (out: F32 of the same size, not aliasing).
void adjust_logits(const DeviceView& logits, const LogitAdjust& adjust, const DeviceView& out,
                   cudaStream_t stream);

// ++counts[token[0]] (token: [1] I32, counts: [vocab] I32); ids outside are ignored.
void count_token(const DeviceView& token, const DeviceView& counts, cudaStream_t stream);

// seen[id] = 1 for every id in ids ([n] I32) inside the vocabulary; others are ignored.
void mark_seen(const DeviceView& ids, const DeviceView& seen, cudaStream_t stream);

}  // namespace exq::cuda
