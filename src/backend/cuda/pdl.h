// Programmatic dependent launch (Hopper) for the small decode kernels (attention_decode.cu,
// runtime/cuda/decode_kernels.cu): whether to use it, and (pdl.cuh) the device side and a
// launcher. A kernel launched this way may start while the previous kernel of the stream still
// runs; it must call pdl_wait() before touching anything an earlier kernel writes or reads.
// EXQ_DECODE_NO_PDL=1 turns it off (A/B timing). Free of exq/fmt headers.
#pragma once

namespace exq::cuda {

// True on compute capability 9.0+ of the current device unless EXQ_DECODE_NO_PDL is set.
bool decode_pdl_enabled();

}  // namespace exq::cuda
