#!/usr/bin/env python3
"""Writes tests/model/data/qwen3_tiny/: a tiny random Qwen3 model (config.json, float16
model.safetensors) and golden.json, the logits transformers computes for a fixed prompt, the
reference for exq's qwen3 forward (per-head q/k RMSNorm, head_dim above hidden / heads).

    pip install torch transformers safetensors && python3 scripts/qwen3_golden.py

The weights are seeded normals of a size that keeps activations O(1), and the q/k norm weights
vary around 1 so that the norms matter; the float16 file's values, read back as float32, give
the logits (exq computes in float32 from the same float16 weights).
"""
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data" / "qwen3_tiny"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200]


def tiny_config():
    """The tiny Qwen3's shape (also scripts/embedding_golden.py's)."""
    return Qwen3Config(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                       max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=True, attention_bias=False, use_sliding_window=False,
                       bos_token_id=1, eos_token_id=2)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config()
    torch.manual_seed(1234)
    model = Qwen3ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(99)
    tensors = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        if name.endswith("norm.weight"):
            v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5)
        tensors[name] = v.to(torch.float16).contiguous()
    save_file(tensors, str(OUT / "model.safetensors"), metadata={"format": "pt"})
    cfg.torch_dtype = "float16"
    cfg.architectures = ["Qwen3ForCausalLM"]
    cfg.to_json_file(str(OUT / "config.json"))

    # The saved values as float32, through transformers' eager float32 forward.
    loaded = {k: v.to(torch.float32) for k, v in load_file(str(OUT / "model.safetensors")).items()}
    model = Qwen3ForCausalLM(Qwen3Config.from_pretrained(str(OUT), torch_dtype=torch.float32)).eval()
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    model.tie_weights()
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0].to(torch.float32)
    golden = {"prompt_ids": PROMPT, "logits": logits.tolist(),
              "note": "transformers Qwen3ForCausalLM, float32, weights as stored (float16)"}
    (OUT / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {OUT}: logits {tuple(logits.shape)}, |max| {logits.abs().max():.3f}")


if __name__ == "__main__":
    main()
