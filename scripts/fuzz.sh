#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for $1 seconds (default 60), seeded
# with real files from ../shared. Fails on any crash, leak or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j"$(nproc)" --target fuzzers
shared="${EXQ_SHARED:-$(cd .. && pwd)/shared}"
for bin in build/fuzz/fuzz/*_fuzz; do
  [ -x "$bin" ] || continue
  name="$(basename "$bin" _fuzz)"
  corpus="build/fuzz/corpus/$name"
  mkdir -p "$corpus"
  [ -d "fuzz/seeds/$name" ] && cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true
  echo "== fuzzing $name for ${secs}s"
  "$bin" -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
    "$corpus" 2>&1 | tail -n 12
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzzer $name found a crash"; exit 1; }
done
