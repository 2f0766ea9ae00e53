#!/usr/bin/env python3
"""Writes tests/model/data/mistral3_tiny/: a tiny random Mistral 3 (model_type mistral3, as
Mistral Small 3.1 / 3.2 are stored: the language model under language_model., a Pixtral vision
tower and a projector beside it) saved by transformers, and golden.json, the logits
Mistral3ForConditionalGeneration computes for a 14-token text prompt (float32, eager attention,
the float16 weights as stored). The text model has a window of 5 keys and an untied head.

    pip install torch transformers safetensors && python3 scripts/mistral3_golden.py
"""
import json
import pathlib

import torch
from transformers import AutoModelForImageTextToText, Mistral3Config, Mistral3ForConditionalGeneration

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "model" / "data"
PROMPT = [7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8]
TEXT = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 5, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2}
VISION = {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
          "num_attention_heads": 2, "head_dim": 16, "image_size": 32, "patch_size": 16}


def main():
    out = DATA / "mistral3_tiny"
    out.mkdir(parents=True, exist_ok=True)
    cfg = Mistral3Config(text_config=TEXT, vision_config=VISION, spatial_merge_size=1, tie_word_embeddings=False)
    torch.manual_seed(4321)
    model = Mistral3ForConditionalGeneration(cfg)
    with torch.no_grad():  # larger than the init's 0.02 so the logits spread
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.15)
    model.half().save_pretrained(str(out))
    loaded = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32,
                                                         attn_implementation="eager").eval()
    with torch.no_grad():
        logits = loaded(input_ids=torch.tensor([PROMPT])).logits[0]
    (out / "golden.json").write_text(json.dumps({
        "prompt_ids": PROMPT, "logits": [[round(float(x), 6) for x in row] for row in logits],
        "note": "transformers Mistral3ForConditionalGeneration (text only), float32, eager attention, "
                "weights as stored (float16)"}) + "\n")
    print(out, "max |logit|", float(logits.abs().max()))


if __name__ == "__main__":
    main()
