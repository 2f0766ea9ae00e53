#!/usr/bin/env bash
# GPU tests and benchmarks on a device machine that lacks the dev packages and the network.
#   scripts/gpu_tests.sh pack      (here) build the CUDA test binaries, benches and exq for
#                                  sm_90a and stage them with their shared libraries in
#                                  build/gpu/stage (carry it); the model GGUF and the shared
#                                  fixtures travel split in build/gpu/ma and build/gpu/mb
#   scripts/gpu_tests.sh recv-a    (there, carrying build/gpu/ma) keep part 1 in /root/exq
#   scripts/gpu_tests.sh recv-b    (there, carrying build/gpu/mb) part 2, GGUF check, shared/
#   scripts/gpu_tests.sh run [what] (there, carrying build/gpu/ship) tests + benches -> $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build/gpu
# pack: the build folder (GPU_BUILD=build/release reuses a dev build, reconfigured for sm_90a)
GPU_BUILD=${GPU_BUILD:-$BUILD}
STAGE=$BUILD/stage
KEEP=/root/exq
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
TESTS="backend_cuda_tests quant_cuda_tests runtime_cuda_tests memory_cuda_tests"
BENCHES="exl2_gemv_bench expert_gemm_bench gptq_cuda_bench measure_cuda_bench cuda_decode_bench make_random_model convert_bench persistent_probe_bench speculative_bench"
# timed LABEL CMD...: runs CMD and prints LABEL's wall time (no /usr/bin/time on the device).
timed() { local label=$1; shift; local t0; t0=$(date +%s%N); "$@"; local rc=$?
  echo "$label wall $(( ($(date +%s%N) - t0) / 1000000 )) ms rc=$rc"; return $rc; }
case "${1:-run}" in
  pack)
    cmake -S . -B "$GPU_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEXQ_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real -DEXQ_TESTS=ON -DEXQ_BENCH=ON >/dev/null
    targets="exq quant_tests $TESTS $BENCHES"
    cmake --build "$GPU_BUILD" --target $targets -j"${JOBS:-2}"
    rm -rf "$STAGE" && mkdir -p "$STAGE/lib"
    for t in $targets; do
      for f in "$GPU_BUILD/$t" "$GPU_BUILD/tests/$t" "$GPU_BUILD/bench/$t"; do
        # NOSTRIP: binaries that keep their symbols (for a cuda-gdb backtrace there)
        if [ -x "$f" ] && [ -f "$f" ]; then
          cp "$f" "$STAGE/"
          case " ${NOSTRIP:-} " in *" $t "*) ;; *) strip "$STAGE/$t" ;; esac
        fi
      done
    done
    for bin in "$STAGE"/*; do
      [ -f "$bin" ] || continue
      ldd "$bin" | awk '/=> \// {print $3}' | grep -vE 'libc\.|libm\.|libgcc|libstdc|ld-linux|libpthread|libdl|librt|libcuda|libcublas|libcudart|libcusolver|libnvidia|libnvJitLink|libcusparse' |
        xargs -r -I{} cp -Ln {} "$STAGE/lib/"
    done
    rm -rf "$BUILD/ship" && mkdir -p "$BUILD/ship"
    tar -C "$BUILD" -cf - stage | xz -T2 -6 > "$BUILD/ship/stage.tar.xz"
    du -sh "$STAGE" "$BUILD/ship"; ls "$STAGE"
    ;;
  recv-a)
    mkdir -p $KEEP/shared/fixtures && cp $BUILD/ma/gp_aa $KEEP/ && cp -r $BUILD/ma/fixtures/exl2 $KEEP/shared/fixtures/
    ls -la $KEEP
    ;;
  recv-c)
    cp $BUILD/mc/gp_ac $KEEP/ ;;
  recv-b)
    cat $KEEP/gp_aa $BUILD/mb/gp_ab $KEEP/gp_ac > $KEEP/smollm2.gguf && rm -f $KEEP/gp_aa $KEEP/gp_ac
    echo "$GGUF_SHA  $KEEP/smollm2.gguf" | sha256sum -c
    cp -r $BUILD/mb/fixtures/* $KEEP/shared/fixtures/ && cp -r $BUILD/mb/data $BUILD/mb/models $BUILD/mb/docs $KEEP/shared/
    ls -la $KEEP $KEEP/shared
    ;;
  run)
    OUT=${OUT:-/tmp/gpu_out}
    mkdir -p "$OUT"
    if [ -f "$BUILD/ship/stage.tar.xz" ]; then
      rm -rf $KEEP/stage && mkdir -p $KEEP && xz -dc "$BUILD/ship/stage.tar.xz" | tar -C $KEEP -xf -
      STAGE=$KEEP/stage
    fi
    export LD_LIBRARY_PATH="$STAGE/lib:${LD_LIBRARY_PATH:-}"
    export EXQ_SHARED=$KEEP/shared EXQ_TEST_GGUF=$KEEP/smollm2.gguf EXQ_TEST_MODEL=$KEEP/smollm2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    if [ ! -f $KEEP/smollm2/model.safetensors ] && [ -f $KEEP/smollm2.gguf ]; then
      "$STAGE/exq" import-gguf $KEEP/smollm2.gguf $KEEP/smollm2 2>&1 | tail -n 3
    fi
    shift || true
    [ $# -eq 0 ] && set -- tests
    set +e
    for w in "$@"; do
      case "$w" in
        tests)
          for t in $TESTS; do
            [ -x "$STAGE/$t" ] || continue
            timeout ${TEST_TIMEOUT:-240} "$STAGE/$t" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} 2>&1 | tee "$OUT/$t.log" | grep -E '^\[ +(FAILED|PASSED|OK) |SKIPPED|Failure|error|Expected|Which is|actual|^\[==|cuda_engine_test|Segmentation|Aborted' | tail -n ${TEST_LINES:-80}
          done ;;
        convert)  # SmolLM2 with default rows at 4.0 bpw (measure + quantize), then 2.5 reusing the measurement
          D=$KEEP/shared/data; CAL="-c $D/wiki.utf8 $D/c4.utf8 $D/code.utf8 $D/multilingual.utf8 $D/technical.utf8 $D/tiny.utf8"
          rm -rf /tmp/q40 /tmp/q25 /tmp/m40 /tmp/m25
          for spec in "4.0 /tmp/q40 /tmp/m40" "2.5 /tmp/q25 /tmp/m25"; do
            set -- $spec
            case " ${BPWS:-4.0 2.5} " in *" $1 "*) ;; *) continue ;; esac
            extra=""; [ "$1" = "2.5" ] && extra="-m /tmp/q40/measurement.json"
            timed "quantize $1" timeout 300 "$STAGE/exq" quantize -i $EXQ_TEST_MODEL -o $2 -cf $3 -b $1 $CAL $extra --device cuda --status-json > $OUT/convert_$1.jsonl 2> /tmp/convert_$1.err
            tail -n 4 /tmp/convert_$1.err
            # --kl-base: also the KL divergence to the FP16 model on the same windows
            timeout 120 "$STAGE/exq" ppl -m $3 --kl-base $EXQ_TEST_MODEL -f $D/wiki.utf8 --window 512 --windows 16 --device cuda --json
            timeout 120 "$STAGE/exq" ppl -m $3 --kl-base $EXQ_TEST_MODEL -f $D/c4.utf8 --window 512 --windows 16 --device cuda --json
            [ -n "${CPU_PPL:-}" ] && timeout 180 "$STAGE/exq" ppl -m $3 --kl-base $EXQ_TEST_MODEL -f $D/wiki.utf8 --window 512 --windows 16 --device cpu --json
          done ;;
        model8b)  # random Llama-3-8B-shaped model, $LAYERS layers, converted at 4.0 bpw under a 24 GB budget (TIED= : untied head)
          L=${LAYERS:-8}
          timed make_random_model "$STAGE/make_random_model" --out /tmp/r8b --hidden 4096 --inter 14336 --heads 32 --kv-heads 8 --head-dim 128 --layers $L --vocab 49152 --rope-theta 500000 ${TIED---tied} --tokenizer-from $KEEP/smollm2 2>&1 | tail -n 2
          D=$KEEP/shared/data; CAL="-c $D/wiki.utf8 $D/c4.utf8 $D/code.utf8 $D/multilingual.utf8 $D/technical.utf8 $D/tiny.utf8"
          timed "quantize 8b-shaped L=$L" timeout 420 "$STAGE/exq" quantize -i /tmp/r8b -o /tmp/w8b -cf /tmp/o8b -b 4.0 $CAL --device cuda --vram-budget 24 --status-json > $OUT/convert_8b.jsonl 2> /tmp/convert_8b.err
          tail -n 4 /tmp/convert_8b.err ;;
        *) eval "$w" ;;
      esac
    done
    ;;
  *) echo "usage: $0 pack|recv-a|recv-b|run [what]" >&2; exit 2 ;;
esac
