// A seeded random decoder layer (no biases) for CPU measurement tests: norms 1 + N(0, 0.1),
// linears N(0, sd) with the spreads given, seeds 1..9 in a fixed order.
#pragma once

#include "io/hf_config.h"
#include "quant/module_forward.h"
#include "tiny_llama.h"

namespace exq::test {

struct LayerSpread {
  float qk = 0.06f, vo = 0.06f, gate_up = 0.06f, down = 0.04f;
};

inline quant::LayerF32 random_layer(const io::ModelConfig& c, LayerSpread s = {}) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  quant::LayerF32 l;
  l.attn_norm = random_normal({h}, 0.1f, 1, 1.0f);
  l.ffn_norm = random_normal({h}, 0.1f, 2, 1.0f);
  l.q = random_normal({q, h}, s.qk, 3);
  l.k = random_normal({kv, h}, s.qk, 4);
  l.v = random_normal({kv, h}, s.vo, 5);
  l.o = random_normal({h, q}, s.vo, 6);
  l.gate = random_normal({f, h}, s.gate_up, 7);
  l.up = random_normal({f, h}, s.gate_up, 8);
  l.down = random_normal({h, f}, s.down, 9);
  return l;
}

}  // namespace exq::test
