#!/usr/bin/env python3
"""Writes tests/io/data/spm_tiny.json: a tiny SentencePiece BPE vocabulary (600 pieces trained on
300 KB of ../shared/data/wiki.utf8 with Llama's settings: byte fallback, split digits, identity
normalization, a dummy prefix, extra whitespace kept) as llama.cpp's GGUF stores it (pieces,
scores, token types), and the ids sentencepiece itself gives for a set of texts: import-gguf's
tokenizer.json must reproduce them.

    pip install sentencepiece && python3 scripts/spm_golden.py
"""
import json
import pathlib
import tempfile

import sentencepiece as spm

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXTS = ["Hello world", "Hello world, 1234 tokens!", "  two leading spaces", "Two  spaces\nand a newline\n",
         "é ü ß 中文 🙂", "The quick brown fox jumps over the lazy dog.", "a", " ", "tabs\tand\r\nCRLF",
         "unicode: \u00e9\u0301 (e + combining acute)", "1990s-2000s: 3.14159 and 2,718"]


def main():
    text = (ROOT.parent / "shared" / "data" / "wiki.utf8").read_text(encoding="utf-8")[:300000]
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "train.txt"
        src.write_text(text, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(src), model_prefix=str(pathlib.Path(tmp) / "tiny"), model_type="bpe", vocab_size=600,
            byte_fallback=True, split_digits=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=True, character_coverage=0.9995,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(pathlib.Path(tmp) / "tiny.model"))
    n = sp.get_piece_size()
    # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 5 if sp.is_unused(i) else 1
             for i in range(n)]
    out = {"note": "sentencepiece " + spm.__version__ + " BPE, trained by scripts/spm_golden.py",
           "tokens": [sp.id_to_piece(i) for i in range(n)], "scores": [sp.get_score(i) for i in range(n)],
           "types": types, "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id(),
           "cases": [{"text": t, "ids": sp.encode(t)} for t in TEXTS]}
    path = ROOT / "tests" / "io" / "data" / "spm_tiny.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {path}: {n} pieces, {len(TEXTS)} texts")


if __name__ == "__main__":
    main()
