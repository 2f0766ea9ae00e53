#!/usr/bin/env bash
# Runs the CUDA test suite and GPU benchmarks on a GPU machine that lacks the dev packages.
#   scripts/gpu_tests.sh pack   (here) builds backend_cuda_tests + exl2_gemv_bench for sm_90a and
#                               stages them with their shared libraries and the fixtures in
#                               build/gpu/stage
#   scripts/gpu_tests.sh run    (there, carrying build/gpu/stage) runs them, JSON + logs to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/gpu
STAGE=$BUILD/stage
case "${1:-run}" in
  pack)
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEXQ_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real -DEXQ_TESTS=ON -DEXQ_BENCH=ON >/dev/null
    cmake --build "$BUILD" --target backend_cuda_tests exl2_gemv_bench -j"${JOBS:-2}"
    rm -rf "$STAGE" && mkdir -p "$STAGE/lib" "$STAGE/shared/fixtures"
    cp "$BUILD/tests/backend_cuda_tests" "$BUILD/bench/exl2_gemv_bench" "$STAGE/"
    for bin in "$STAGE"/backend_cuda_tests "$STAGE"/exl2_gemv_bench; do
      ldd "$bin" | awk '/=> \// {print $3}' | grep -vE 'libc\.|libm\.|libgcc|libstdc|ld-linux|libpthread|libdl|librt|libcuda|libcublas|libcudart|libnvidia' |
        xargs -r -I{} cp -Ln {} "$STAGE/lib/"
    done
    cp -r ../shared/fixtures/exl2 ../shared/fixtures/smollm2 "$STAGE/shared/fixtures/"
    du -sh "$STAGE"
    ;;
  run)
    OUT=${OUT:-/tmp/gpu_out}
    mkdir -p "$OUT"
    export LD_LIBRARY_PATH="$PWD/$STAGE/lib:${LD_LIBRARY_PATH:-}"
    export EXQ_SHARED="$PWD/$STAGE/shared"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    set +e
    "$STAGE/backend_cuda_tests" --gtest_output="json:$OUT/cuda_tests.json" 2>&1 | tail -n 60 | tee "$OUT/cuda_tests.log"
    echo "cuda_tests rc=${PIPESTATUS[0]}" | tee -a "$OUT/cuda_tests.log"
    "$STAGE/backend_cuda_tests" --gtest_also_run_disabled_tests --gtest_filter='Timing.*' 2>&1 | tail -n 30 | tee "$OUT/timing.log"
    "$STAGE/exl2_gemv_bench" --json "$OUT/exl2_gemv_bench.json" --iters 100 2>&1 | tail -n 40 | tee "$OUT/bench.log"
    ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
