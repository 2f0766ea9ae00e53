#!/usr/bin/env python3
"""Writes tests/io/data/gguf_goldens.json: random GGUF quantized blocks and their values as
dequantized by gguf-py (llama.cpp's Python package), the reference for exq's own dequantizers.

    pip install numpy gguf==0.19.0 && python3 scripts/gguf_goldens.py

Each block's scale fields are random float16 values of moderate size, so every value is finite
in float16; the other bytes are random. Values are stored as float32 bits (gguf-py computes in
float32); exq rounds them to float16 itself.
"""
import json
import pathlib

import numpy as np
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

# Byte offsets of float16 scale fields in each block type.
SCALE_FIELDS = {
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q8_0: [0],
}
BLOCKS = 4


def main() -> None:
    rng = np.random.default_rng(20261127)
    out = {"generator": "gguf-py " + "0.19.0", "types": []}
    for qtype, fields in SCALE_FIELDS.items():
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, type_size), dtype=np.uint8)
        for f in fields:
            mag = rng.uniform(1e-3, 2e-2, size=BLOCKS).astype(np.float16)
            sign = np.where(rng.random(BLOCKS) < 0.3, -1, 1).astype(np.float16)
            raw[:, f:f + 2] = (mag * sign).view(np.uint8).reshape(BLOCKS, 2)
        values = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32)
        assert values.shape == (BLOCKS * block_size,)
        assert np.all(np.isfinite(values.astype(np.float16)))
        out["types"].append({
            "type": int(qtype),
            "name": qtype.name,
            "block_size": block_size,
            "blocks": raw.reshape(-1).tobytes().hex(),
            "values_f32_bits": values.view(np.uint32).tobytes().hex(),
        })
    path = pathlib.Path(__file__).resolve().parent.parent / "tests/io/data/gguf_goldens.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
