#!/usr/bin/env python3
"""Writes tests/model/data/granite_tiny/: a tiny random IBM Granite (model_type granite) and
golden.json, the logits transformers computes for a 14-token prompt (float32, eager attention,
the float16 weights as stored).

Granite is llama with four scalars, each set apart from its neutral value here so the test sees
it: embedding_multiplier 12 (the embedding rows times it), attention_multiplier 0.09375 (the
score scale instead of head_dim^-0.5 = 0.25), residual_multiplier 0.22 (each sublayer's output
times it before the residual add), logits_scaling 8 (the logits divided by it). The head is tied
to the embedding, as in granite-3.x. "without" says how far the logits move when a scalar is
set back to its neutral value.

    pip install torch transformers safetensors && python3 scripts/granite_golden.py
"""
import json
import pathlib

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tiny_checkpoint import write_random_checkpoint

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8]
CONFIG = {"architectures": ["GraniteForCausalLM"], "model_type": "granite", "vocab_size": 320,
          "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
          "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 256,
          "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
          "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "float32",
          "tie_word_embeddings": True, "embedding_multiplier": 12.0, "attention_multiplier": 0.09375,
          "residual_multiplier": 0.22, "logits_scaling": 8.0}
NEUTRAL = {"embedding_multiplier": 1.0, "attention_multiplier": 0.25, "residual_multiplier": 1.0,
           "logits_scaling": 1.0}


def logits_of(out, change=None):
    cfg = AutoConfig.from_pretrained(str(out))
    if change:
        for k, v in change.items():
            setattr(cfg, k, v)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_pretrained(str(out), config=cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0].to(torch.float32)


def main():
    out = DATA / "granite_tiny"
    tensors = write_random_checkpoint(out, CONFIG)
    assert "lm_head.weight" not in tensors, "the head should be tied"
    logits = logits_of(out)
    moved = {k: (logits_of(out, {k: v}) - logits).abs().max().item() for k, v in NEUTRAL.items()}
    golden = {"prompt_ids": PROMPT, "logits": logits.tolist(),
              "note": "transformers granite, float32, eager attention, weights as stored (float16)"}
    (out / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {out}: |max| {logits.abs().max():.3f}, without: " +
          ", ".join(f"{k} {v:.3f}" for k, v in moved.items()))


if __name__ == "__main__":
    main()
