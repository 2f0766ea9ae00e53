// Rotary position embedding (HF Llama rotate_half layout: dims i and i + head_dim/2 form a
// pair). The cos/sin table is computed on the host in double precision and uploaded once.
// Launcher: rotary_cuda in launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include <span>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/launchers.h"
#include "core/tensor.h"

namespace exq::cuda {

// Host tables, both [positions, head_dim / 2] F32: cos(p * inv_freq[i]), sin(p * inv_freq[i]).
struct RotaryTable {
  Tensor cos;
  Tensor sin;
};

// inv_freq[i] = theta^(-2i / head_dim), the unscaled Llama rope.
RotaryTable make_rotary_table(int head_dim, int positions, double theta);
// Any frequencies (e.g. Llama-3 rope scaling computed by the model loader): [head_dim / 2].
RotaryTable make_rotary_table(std::span<const double> inv_freq, int positions);

// In place. x: [tokens, heads, head_dim] F32, token t at position start + t (start may live
// in device memory: StartPos, launchers.h); cos, sin: device copies of a RotaryTable with at
// least start + tokens rows.
void rotary(const DeviceView& x, const DeviceView& cos, const DeviceView& sin, StartPos start,
            cudaStream_t stream);

}  // namespace exq::cuda
