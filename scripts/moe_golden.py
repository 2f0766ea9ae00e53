#!/usr/bin/env python3
"""Writes tests/model/data/mixtral_tiny/ and qwen3_moe_tiny/: tiny random mixture-of-experts
models and golden.json, the logits transformers computes for a 14-token prompt (float32, eager
attention, the float16 weights as stored).

- mixtral: 2 layers, 4 experts, 2 a token (weights renormalized to sum 1), the checkpoint's
  block_sparse_moe.experts.E.w1 / w3 / w2 names.
- qwen3_moe: 3 layers, 6 experts of moe_intermediate_size 24, 3 a token, norm_topk_prob true,
  layer 1 a dense MLP (mlp_only_layers), q/k norms; qwen3_moe_tiny/config.nonorm.json the same
  with norm_topk_prob false (its golden: golden.nonorm.json).

The checkpoints are written with transformers' own names (save_pretrained), then their values
replaced. "without" says how far the logits move when a feature is switched off.

    pip install torch transformers safetensors && python3 scripts/moe_golden.py
"""
import json
import pathlib

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tiny_checkpoint import write_random_checkpoint

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8]
COMMON = {"vocab_size": 320, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "bos_token_id": 2, "eos_token_id": 1,
          "pad_token_id": 0, "torch_dtype": "float32", "tie_word_embeddings": False}


def logits_of(out, config_name="config.json", change=None):
    cfg = AutoConfig.from_pretrained(str(out / config_name) if config_name != "config.json" else str(out))
    if change:
        change(cfg)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_pretrained(str(out), config=cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0].to(torch.float32)


def write(name, raw, variants, extra_configs=()):
    out = DATA / name
    write_random_checkpoint(out, raw, router_scale=4.0)
    logits = logits_of(out)
    moved = {what: (logits_of(out, change=f) - logits).abs().max().item() for what, f in variants.items()}
    golden = {"prompt_ids": PROMPT, "logits": logits.tolist(),
              "note": f"transformers {raw['model_type']}, float32, eager attention, weights as stored (float16)"}
    (out / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {out}: |max| {logits.abs().max():.3f}, without: " +
          ", ".join(f"{k} {v:.3f}" for k, v in moved.items()))
    for suffix, change in extra_configs:
        d = dict(raw)
        change(d)
        (out / f"config.{suffix}.json").write_text(json.dumps(d, indent=2) + "\n")
        other = logits_of(out, f"config.{suffix}.json")
        (out / f"golden.{suffix}.json").write_text(json.dumps(
            {"prompt_ids": PROMPT, "logits": other.tolist(), "note": golden["note"] + f", config.{suffix}.json"},
            separators=(",", ":")))
        print(f"  {suffix}: moved {(other - logits).abs().max().item():.3f}")


def top1(cfg):
    cfg.num_experts_per_tok = 1


def main():
    write("mixtral_tiny", {**COMMON, "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                           "num_hidden_layers": 2, "intermediate_size": 48, "num_local_experts": 4,
                           "num_experts_per_tok": 2, "hidden_act": "silu", "rope_theta": 1e6,
                           "sliding_window": None, "head_dim": None},
          {"top-1 routing": top1})
    write("qwen3_moe_tiny", {**COMMON, "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                             "num_hidden_layers": 3, "intermediate_size": 48, "moe_intermediate_size": 24,
                             "num_experts": 6, "num_experts_per_tok": 3, "norm_topk_prob": True,
                             "decoder_sparse_step": 1, "mlp_only_layers": [1], "head_dim": 16,
                             "hidden_act": "silu", "rope_theta": 10000.0, "use_sliding_window": False},
          {"top-1 routing": top1},
          extra_configs=[("nonorm", lambda d: d.update(norm_topk_prob=False))])


if __name__ == "__main__":
    main()
