#!/usr/bin/env python3
"""Writes tests/model/data/granitemoe_tiny/: a tiny random IBM Granite MoE (model_type granitemoe,
as granite-3.0-1b-a400m / 3b-a800m and granite-3.1's MoE models) and golden.json, the logits
transformers computes for a 14-token prompt (float32, eager attention, the float16 weights as
stored).

Granite MoE is granite's four scalars (set apart from their neutral values) over Mixtral-like
layers whose experts are stored fused: block_sparse_moe.input_linear [experts, 2 x inter,
hidden] (gate rows, then up rows), output_linear [experts, hidden, inter], the router
block_sparse_moe.router.layer; top-k of the router logits, weighted by their softmax. The head
is tied, as in granite-3.0-1b-a400m. "without" says how far the logits move when a scalar is
set back to its neutral value, or with one expert a token.

    pip install torch transformers safetensors && python3 scripts/granitemoe_golden.py
"""
import json

from granite_golden import DATA, PROMPT, logits_of  # the same prompt, read back the same way
from tiny_checkpoint import write_random_checkpoint

CONFIG = {"architectures": ["GraniteMoeForCausalLM"], "model_type": "granitemoe", "vocab_size": 320,
          "hidden_size": 64, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 256,
          "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False,
          "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "float32",
          "tie_word_embeddings": True, "embedding_multiplier": 12.0, "attention_multiplier": 0.09375,
          "residual_multiplier": 0.22, "logits_scaling": 8.0, "num_local_experts": 5, "num_experts_per_tok": 2}
NEUTRAL = {"embedding_multiplier": 1.0, "attention_multiplier": 0.25, "residual_multiplier": 1.0,
           "logits_scaling": 1.0, "num_experts_per_tok": 1}


def main():
    out = DATA / "granitemoe_tiny"
    tensors = write_random_checkpoint(out, CONFIG, router_scale=4.0)
    assert any(k.endswith("block_sparse_moe.input_linear.weight") for k in tensors), sorted(tensors)
    logits = logits_of(out)
    moved = {k: (logits_of(out, {k: v}) - logits).abs().max().item() for k, v in NEUTRAL.items()}
    (out / "golden.json").write_text(json.dumps({
        "prompt_ids": PROMPT, "logits": logits.tolist(),
        "note": "transformers granitemoe, float32, eager attention, weights as stored (float16)"},
        separators=(",", ":")))
    print(f"wrote {out}: |max| {logits.abs().max():.3f}, without: " +
          ", ".join(f"{k} {v:.3f}" for k, v in moved.items()))
    print(sorted(k for k in tensors if "layers.0." in k))


if __name__ == "__main__":
    main()
