#!/usr/bin/env bash
# CUDA EXL2 GEMV tests and benchmark on a GPU machine.
#   scripts/gpu_exl2.sh pack   (here) builds backend_cuda_tests and exl2_gemv_bench for sm_90a
#                              and stages them with libfmt and the EXL2 fixtures in
#                              build/cudaq/gpu (the GPU machine has no dev packages)
#   scripts/gpu_exl2.sh run    (there, carrying build/cudaq/gpu) runs the tests and the bench,
#                              writing logs and JSON to $OUT
#   scripts/gpu_exl2.sh build  (there, if it has the dev packages) configures and builds first
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/cudaq
STAGE=$BUILD/gpu

configure_and_build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEXQ_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a-real -DEXQ_TESTS=ON -DEXQ_BENCH=ON >/dev/null
  cmake --build "$BUILD" --target backend_cuda_tests exl2_gemv_bench -j"$1"
}

case "${1:-run}" in
  pack)
    configure_and_build 2
    rm -rf "$STAGE" && mkdir -p "$STAGE/lib" "$STAGE/shared/fixtures/exl2"
    cp "$BUILD/tests/backend_cuda_tests" "$BUILD/bench/exl2_gemv_bench" "$STAGE/"
    cp -L "$(ldd "$STAGE/backend_cuda_tests" | awk '/libfmt/ {print $3}')" "$STAGE/lib/"
    cp ../shared/fixtures/exl2/smollm2_layer0_*bpw.safetensors "$STAGE/shared/fixtures/exl2/"
    du -sh "$STAGE"
    ;;
  build)
    configure_and_build 16
    mkdir -p "$STAGE"
    cp "$BUILD/tests/backend_cuda_tests" "$BUILD/bench/exl2_gemv_bench" "$STAGE/"
    ;&
  run)
    OUT=${OUT:-/tmp/exl2_out}
    mkdir -p "$OUT"
    export LD_LIBRARY_PATH="$PWD/$STAGE/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
    export EXQ_SHARED="$PWD/$STAGE/shared"
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
    set +e
    "$STAGE/backend_cuda_tests" --gtest_filter='Exl2Gemv*' --gtest_output="json:$OUT/tests.json" \
      2>&1 | tee "$OUT/tests.log"
    "$STAGE/exl2_gemv_bench" --json "$OUT/bench.json" --iters 100 2>&1 | tee "$OUT/bench.log"
    if command -v cuobjdump >/dev/null; then
      cuobjdump -sass "$STAGE/exl2_gemv_bench" 2>/dev/null | gzip -9 >"$OUT/sass.txt.gz"
    fi
    ;;
  *) echo "usage: $0 pack|build|run" >&2; exit 2 ;;
esac
