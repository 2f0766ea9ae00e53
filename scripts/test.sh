#!/usr/bin/env bash
# Builds exq and runs the whole test suite: unit tests and goldens on the real model (ctest),
# then each libFuzzer target for ${EXQ_FUZZ_SECONDS:-60} s. Exit code is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
preset="${EXQ_PRESET:-release}"
jobs="$(nproc)"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j"$jobs"

gguf="$(scripts/fetch_model.sh)"
model="build/$preset/smollm2-135m-instruct"
echo "== importing the test model into $model"
"build/$preset/exq" import-gguf "$gguf" "$model"
export EXQ_TEST_GGUF="$PWD/$gguf" EXQ_TEST_MODEL="$PWD/$model"
[[ "$gguf" = /* ]] && export EXQ_TEST_GGUF="$gguf"

echo "== ctest ($preset)"
ctest --preset "$preset" -j"$jobs"

if [ "${EXQ_FUZZ_SECONDS:-60}" != 0 ]; then
  scripts/fuzz.sh "${EXQ_FUZZ_SECONDS:-60}"
fi
