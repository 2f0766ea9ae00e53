#!/usr/bin/env python3
"""Writes tests/model/data/gemma_tiny/, gemma2_tiny/ and gemma3_tiny/: tiny random Gemma models
and golden.json, the logits transformers computes for a 14-token prompt (float32, eager
attention, the float16 weights as stored).

- gemma: hidden_act "gelu" (which transformers, as llama.cpp, runs as the tanh approximation), RMSNorm weights applied as 1 + w, the embedding scaled
  by sqrt(hidden), tied head.
- gemma2: 3 layers, sliding window 5 on layers 0 and 2, head_dim 32 apart from hidden / heads,
  query_pre_attn_scalar 24, attention softcap 2 and final logit softcap 3 (small, so they bite),
  the four norms of a layer.
- gemma3_text: 4 layers, sliding_window_pattern 3 (layer 2 full, the others a window of 6), q/k
  norms, local rotary base 100 on the sliding layers and linear scaling x4 of theta 1e6 on the
  full one, final_logit_softcapping null.

"without" in the output says how far the logits move when a feature is switched off (the
test's tolerance is far below it).

    pip install torch transformers safetensors && python3 scripts/gemma_golden.py
"""
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8]
COMMON = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
          "num_key_value_heads": 2, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
          "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "torch_dtype": "float32"}


def logits_of(out, loaded, change=None):
    cfg = AutoConfig.from_pretrained(str(out))
    if change:
        change(cfg)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if missing:
        model.tie_weights()
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0].to(torch.float32)


def write(name, raw, variants):
    out = DATA / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    cfg = AutoConfig.from_pretrained(str(out))
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(99)
    tensors = {}
    for key, p in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if key.endswith("norm.weight"):
            v = 0.3 * torch.randn(p.shape, generator=g)  # applied as 1 + w
        elif key.endswith("embed_tokens.weight"):
            v = 0.5 * torch.randn(p.shape, generator=g)
        else:
            v = 1.5 * torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5)
        tensors[key] = v.to(torch.float16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    loaded = {k: v.to(torch.float32) for k, v in load_file(str(out / "model.safetensors")).items()}
    logits = logits_of(out, loaded)
    moved = {what: (logits_of(out, loaded, f) - logits).abs().max().item() for what, f in variants.items()}
    golden = {"prompt_ids": PROMPT, "logits": logits.tolist(),
              "note": f"transformers {raw['model_type']}, float32, eager attention, weights as stored (float16)"}
    (out / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {out}: |max| {logits.abs().max():.3f}, without: " +
          ", ".join(f"{k} {v:.3f}" for k, v in moved.items()))


def full_attention(cfg):
    cfg.sliding_window = 1000  # wider than the prompt (gemma's masks need a window set)


def main():
    write("gemma_tiny", {**COMMON, "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
                         "num_hidden_layers": 2, "head_dim": 16, "hidden_act": "gelu",
                         "rope_theta": 10000.0, "tie_word_embeddings": True},
          {})
    write("gemma2_tiny", {**COMMON, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
                          "num_hidden_layers": 3, "head_dim": 32, "hidden_activation": "gelu_pytorch_tanh",
                          "hidden_act": "gelu_pytorch_tanh", "query_pre_attn_scalar": 24,
                          "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
                          "sliding_window": 5, "rope_theta": 10000.0, "tie_word_embeddings": True},
          {"attention softcap": lambda c: setattr(c, "attn_logit_softcapping", None),
           "final softcap": lambda c: setattr(c, "final_logit_softcapping", None),
           "windows": full_attention,
           "query_pre_attn_scalar": lambda c: setattr(c, "query_pre_attn_scalar", 32)})
    write("gemma3_tiny", {**COMMON, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                          "num_hidden_layers": 4, "head_dim": 16, "hidden_activation": "gelu_pytorch_tanh",
                          "query_pre_attn_scalar": 16, "sliding_window": 6, "sliding_window_pattern": 3,
                          "rope_theta": 1000000.0, "rope_local_base_freq": 100.0,
                          "rope_scaling": {"rope_type": "linear", "factor": 4.0},
                          "final_logit_softcapping": None, "attn_logit_softcapping": None,
                          "tie_word_embeddings": True},
          {"windows": full_attention})
    # transformers 5's form of the gemma3 config (rope_parameters per layer kind, layer_types):
    # exq must read it as the same model.
    cfg = AutoConfig.from_pretrained(str(DATA / "gemma3_tiny"))
    d = cfg.to_dict()
    print("gemma3 rope_parameters as transformers 5 writes them:", d.get("rope_parameters"))
    (DATA / "gemma3_tiny" / "config.transformers5.json").write_text(json.dumps(d, indent=2) + "\n")


if __name__ == "__main__":
    main()
