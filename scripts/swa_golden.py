#!/usr/bin/env python3
"""Writes tests/model/data/mistral_swa_tiny/ and qwen2_swa_tiny/: tiny random models with
sliding-window attention and golden.json, the logits transformers computes for a 14-token
prompt. mistral: a window of 5 keys on every layer; qwen2: use_sliding_window with
max_window_layers 1 (layer 0 full attention, layer 1 a window of 4).

    pip install torch transformers safetensors && python3 scripts/swa_golden.py
"""
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8]
COMMON = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
          "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}


def write(name, raw):
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    cfg = AutoConfig.from_pretrained(str(out))
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(99)
    tensors = {}
    for key, p in model.state_dict().items():
        if key.endswith("norm.weight"):
            v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
        elif key.endswith(".bias"):
            v = 0.1 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5)
        tensors[key] = v.to(torch.float16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = AutoConfig.from_pretrained(str(out))
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).to(torch.float32).eval()
    loaded = {k: v.to(torch.float32) for k, v in load_file(str(out / "model.safetensors")).items()}
    model.load_state_dict(loaded, strict=True)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0].to(torch.float32)
        full_cfg = AutoConfig.from_pretrained(str(out))
        full_cfg.sliding_window = None
        if hasattr(full_cfg, "layer_types"):
            full_cfg.layer_types = ["full_attention"] * full_cfg.num_hidden_layers
        full_cfg._attn_implementation = "eager"
        full = AutoModelForCausalLM.from_config(full_cfg).to(torch.float32).eval()
        full.load_state_dict(loaded, strict=True)
        diff = (full(torch.tensor([PROMPT])).logits[0] - logits).abs().max().item()
    golden = {"prompt_ids": PROMPT, "logits": logits.tolist(),
              "note": f"transformers {raw['model_type']}, float32, eager attention, weights as stored (float16)"}
    (out / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {out}: |max| {logits.abs().max():.3f}, full attention differs by {diff:.3f}")


def main():
    write("mistral_swa_tiny", {**COMMON, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                               "head_dim": 16, "sliding_window": 5})
    write("qwen2_swa_tiny", {**COMMON, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                             "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1})


if __name__ == "__main__":
    main()
