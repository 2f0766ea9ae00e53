#!/usr/bin/env python3
"""Writes tests/model/data/qwen3_embed_tiny/: a tiny random Qwen3 embedding model stored as
Qwen3-Embedding-0.6B / 4B / 8B are (Qwen3Model's weights without the "model." prefix, no
lm_head; sentence-transformers' modules.json with last-token pooling and Normalize), and
golden.json: the last hidden state transformers computes for a 12-token prompt (float32, eager
attention, the float16 weights as stored), with its last-token and mean embeddings L2-normalized.

    pip install torch transformers safetensors && python3 scripts/embedding_golden.py
"""
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import AutoModel, Qwen3Model

from qwen3_golden import tiny_config

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data" / "qwen3_embed_tiny"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 2]  # ends with eos, as its tokenizer appends


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config()  # scripts/qwen3_golden.py's shape
    cfg.architectures = ["Qwen3ForCausalLM"]  # what Qwen3-Embedding's config.json says
    torch.manual_seed(1234)
    model = Qwen3Model(cfg).eval()
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight"):
            v = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
        else:
            v = torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5)
        tensors[name] = v.to(torch.float16).contiguous()
    assert "embed_tokens.weight" in tensors and not any(k.startswith("model.") for k in tensors)
    save_file(tensors, str(OUT / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(str(OUT))
    (OUT / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], indent=2) + "\n")
    (OUT / "1_Pooling").mkdir(exist_ok=True)
    (OUT / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 64, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True},
        indent=2) + "\n")
    loaded = AutoModel.from_pretrained(str(OUT), dtype=torch.float32, attn_implementation="eager").eval()
    assert type(loaded).__name__ == "Qwen3Model", type(loaded)
    with torch.no_grad():
        h = loaded(input_ids=torch.tensor([PROMPT])).last_hidden_state[0]
    last = torch.nn.functional.normalize(h[-1], dim=-1)
    mean = torch.nn.functional.normalize(h.mean(dim=0), dim=-1)
    (OUT / "golden.json").write_text(json.dumps({
        "prompt_ids": PROMPT, "hidden": [[round(float(x), 7) for x in row] for row in h],
        "last": [round(float(x), 7) for x in last], "mean": [round(float(x), 7) for x in mean],
        "note": "transformers Qwen3Model last_hidden_state (after the final norm), float32, eager attention, "
                "weights as stored (float16); last / mean: pooled and L2-normalized"}) + "\n")
    print(OUT, "max |h|", float(h.abs().max()))


if __name__ == "__main__":
    main()
