// y[T, out] = x[T, in] @ W^T straight from packed EXL2 tensors, without keeping W: x is
// gathered into the permuted channel order and the codes are turned into exactly the fp16
// weights exllamav2 reconstructs; accumulation is float32. Two paths: few tokens decode and
// multiply in registers (fused), more tokens dequantize a tile of output columns to float32
// and run the dense matmul kernel on it. Raw pointers keep the backend independent of io/;
// io::validate_exl2 gives the group table.
#pragma once

#include <cstdint>

namespace exq::cpu {

struct Exl2MatmulGroup {
  int bits = 0;
  int64_t row_begin = 0;  // first permuted input row
  int64_t rows = 0;
  int64_t word_begin = 0;  // first q_weight row
};

// A validated EXL2 layer (pointers into its tensors; nothing is owned).
struct Exl2MatmulWeight {
  const uint32_t* q_weight = nullptr;     // [words, out_pad]
  const uint32_t* q_scale = nullptr;      // [groups, out_pad/8], 4-bit codes qs-1
  const uint16_t* q_scale_max = nullptr;  // [groups] fp16
  const int32_t* q_perm = nullptr;        // [in]: permuted row i is input channel q_perm[i]
  const Exl2MatmulGroup* groups = nullptr;
  int64_t num_groups = 0;
  const uint16_t* bias = nullptr;  // [out] fp16 or null
  int64_t in = 0;
  int64_t out = 0;
  int64_t out_pad = 0;  // out rounded up to 32
};

enum class Exl2Path {
  Auto,        // Fused below exl2_dequantize_min_tokens() tokens, else Dequantize
  Fused,       // decode each weight in registers and multiply it into every token
  Dequantize   // float32 weight tiles + the dense matmul kernel
};

// From this many tokens on, Auto dequantizes tiles: the crossover measured for the active
// instruction set (bench/exl2_forward_bench BM_Exl2Layer; docs/perf.md).
int64_t exl2_dequantize_min_tokens();

// x: f32 [T, in] contiguous; y: f32 [T, out] contiguous, overwritten. Parallel over output
// column tiles; uses the instruction set of cpu::matmul_isa(). Throws exq::Error on
// inconsistent sizes.
void exl2_matmul(const Exl2MatmulWeight& w, const float* x, int64_t tokens, float* y,
                 Exl2Path path = Exl2Path::Auto);

// The fp16 weight [out, in] in original channel order, as the Dequantize path decodes it
// (bit-identical to io::dequantize_exl2); for tests.
void exl2_dequantize(const Exl2MatmulWeight& w, uint16_t* dst);

// v rounded to the nearest fp16 value (ties to even), returned as float: what
// half_to_float(float_to_half(v)) gives, in branch-light float/integer arithmetic.
float round_to_half(float v);

}  // namespace exq::cpu
