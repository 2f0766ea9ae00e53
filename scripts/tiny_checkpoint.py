"""A tiny random checkpoint for the golden scripts: config.json and model.safetensors in a
folder, with transformers' own tensor names (save_pretrained of a model built from the config)
and values drawn from seed 99, stored as float16."""
import json
import tempfile
import pathlib

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM


def write_random_checkpoint(out, raw_config, router_scale=None):
    """Norms 1 + 0.3 N(0, 1), embeddings 0.5 N, MoE routers (".gate.weight", granitemoe's
    ".router.layer.weight", when router_scale is
    given) router_scale N / sqrt(in): logits of a few units, so routing is decided; every other
    weight 1.5 N / sqrt(in). Returns the tensors written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n")
    cfg = AutoConfig.from_pretrained(str(out))
    torch.manual_seed(1234)
    with tempfile.TemporaryDirectory() as tmp:
        AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp)
        names = load_file(str(pathlib.Path(tmp) / "model.safetensors"))
    g = torch.Generator().manual_seed(99)
    tensors = {}
    for key in sorted(names):
        shape = names[key].shape
        if key.endswith("norm.weight"):
            v = 1.0 + 0.3 * torch.randn(shape, generator=g)
        elif key.endswith("embed_tokens.weight"):
            v = 0.5 * torch.randn(shape, generator=g)
        elif router_scale is not None and key.endswith((".gate.weight", ".router.layer.weight")):
            v = router_scale * torch.randn(shape, generator=g) / (shape[-1] ** 0.5)
        else:
            v = 1.5 * torch.randn(shape, generator=g) / (shape[-1] ** 0.5)
        tensors[key] = v.to(torch.float16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return tensors
