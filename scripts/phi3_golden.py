#!/usr/bin/env python3
"""Writes tests/model/data/phi3_tiny/: a tiny random Phi-3 model (fused qkv_proj and gate_up_proj,
LongRoPE scaling as Phi-3.5 has it; config.json in the Hub's transformers 4 form, float16
model.safetensors) and golden.json, the logits transformers computes for two prompts: one within
the original context (short factors) and one beyond it (long factors). And
tests/model/data/phi3_partial_tiny/: the same as Phi-4-mini is shaped (partial_rotary_factor
0.75: rotary over 24 of each head's 32 dimensions; tied embeddings).

    pip install torch transformers safetensors && python3 scripts/phi3_golden.py

transformers picks the factor set by the length of the forward (long above
original_max_position_embeddings); exq by the KV cache's capacity, which the test sets to the
prompt's length, so both take the same set.
"""
import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import Phi3Config, Phi3ForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data" / "phi3_tiny"
ORIGINAL = 16
SHORT_PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200]
LONG_PROMPT = SHORT_PROMPT + [33, 8, 271, 95, 160, 2, 45, 310, 12, 99, 188, 64]


def hub_config(half, seed=7):
    g = torch.Generator().manual_seed(seed)
    short = (1.0 + torch.rand(half, generator=g)).tolist()
    long = (1.0 + 7.0 * torch.rand(half, generator=g)).tolist()
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 320,
        "hidden_size": 128, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 64, "original_max_position_embeddings": ORIGINAL,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
        "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float16",
        "attention_dropout": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
    }


def write(out, raw):
    out.mkdir(parents=True, exist_ok=True)
    OUT = out
    (OUT / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    cfg = Phi3Config.from_pretrained(str(OUT))
    torch.manual_seed(1234)
    model = Phi3ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(99)
    tensors = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and raw["tie_word_embeddings"]:
            continue
        if name.endswith("norm.weight"):
            v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5)
        tensors[name] = v.to(torch.float16).contiguous()
    assert "model.layers.0.self_attn.qkv_proj.weight" in tensors
    assert "model.layers.0.mlp.gate_up_proj.weight" in tensors
    save_file(tensors, str(OUT / "model.safetensors"), metadata={"format": "pt"})

    loaded = {k: v.to(torch.float32) for k, v in load_file(str(OUT / "model.safetensors")).items()}
    model = Phi3ForCausalLM(Phi3Config.from_pretrained(str(OUT), torch_dtype=torch.float32)).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(loaded, strict=False)
    assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
    if raw["tie_word_embeddings"]:
        model.tie_weights()
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    golden = {"note": "transformers Phi3ForCausalLM, float32, weights as stored (float16)"}
    for key, prompt in (("short", SHORT_PROMPT), ("long", LONG_PROMPT)):
        with torch.no_grad():
            logits = model(torch.tensor([prompt])).logits[0].to(torch.float32)
        golden[key] = {"prompt_ids": prompt, "logits": logits.tolist()}
        print(f"{key}: {len(prompt)} tokens, logits |max| {logits.abs().max():.3f}")
    (OUT / "golden.json").write_text(json.dumps(golden, separators=(",", ":")))
    print(f"wrote {OUT}")


def main():
    write(OUT, hub_config(half=16))  # head_dim 32
    partial = hub_config(half=12, seed=8)  # 24 rotary dimensions
    partial["partial_rotary_factor"] = 0.75
    partial["tie_word_embeddings"] = True
    write(OUT.parent / "phi3_partial_tiny", partial)


if __name__ == "__main__":
    main()
