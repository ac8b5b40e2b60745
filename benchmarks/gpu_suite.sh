#!/usr/bin/env bash
# The GPU runs recorded in benchmarks/results/gpu/: the paper's 350M preset on one CUDA device.
#   bash benchmarks/gpu_suite.sh OUT_DIR [eager] [compiled]
# Each part writes its JSON into OUT_DIR as it goes and is cut off by `timeout` (a lease is short), so an
# interrupted part keeps the cells it finished. SUITE_DEVICE / SUITE_PRESET (default cuda / paper) let it be
# tried end to end on a CPU with the tiny preset.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [eager] [compiled]}
shift
parts=${*:-eager compiled}
mkdir -p "$out"
bench=benchmarks
device=${SUITE_DEVICE:-cuda}
preset=${SUITE_PRESET:-paper}
run() {  # run SECONDS NAME COMMAND...: one part, its output kept in OUT_DIR/NAME.log
  local limit=$1 name=$2
  shift 2
  echo "== $name (at most ${limit}s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log" | tail -n 25
}
for part in $parts; do
  case $part in
    eager)
      run 60 gpu_tests python -m pytest -q tests/test_gpu.py
      # bf16, eager: SoundStorm at batch 1 and 8, the AR Llama of the same size at batch 1 (one timed call).
      run 330 generation_bf16 python $bench/bench_generation.py --preset $preset --device $device --dtype bf16 \
        --durations 5 10 30 60 --batch-sizes 1 8 --repeats 5 --ar-durations 5 10 30 --ar-repeats 1 --ar-warmup 0 \
        --out "$out/generation_bf16.json"
      run 60 generation_fp32 python $bench/bench_generation.py --preset $preset --device $device --dtype fp32 \
        --durations 5 30 --batch-sizes 1 8 --repeats 5 --ar-durations --out "$out/generation_fp32.json"
      run 60 generation_windowed python $bench/bench_generation.py --preset $preset --device $device --dtype bf16 \
        --windowed --durations 30 60 120 --batch-sizes 1 --repeats 3 --ar-durations \
        --out "$out/generation_windowed.json"
      run 120 training_bf16 python $bench/bench_training.py --preset $preset --device $device --dtype bf16 \
        --cells 5:8 10:8 30:2 --steps 5 --out "$out/training_bf16.json"
      ;;
    compiled)
      run 200 generation_compiled python $bench/bench_generation.py --preset $preset --device $device --dtype bf16 \
        --compile --durations 5 30 --batch-sizes 1 8 --repeats 5 --ar-durations --out "$out/generation_compiled.json"
      run 150 generation_cudagraphs python $bench/bench_generation.py --preset $preset --device $device --dtype bf16 \
        --compile --compile-mode reduce-overhead --durations 5 30 --batch-sizes 1 --repeats 5 --ar-durations \
        --out "$out/generation_cudagraphs.json"
      run 150 soundstorm_pytorch env PYTHONPATH="$bench/sspt_stubs:${PYTHONPATH:-}" python \
        $bench/bench_soundstorm_pytorch.py --preset $preset --device $device --dtype bf16 --durations 5 10 30 \
        --repeats 5 --out "$out/soundstorm_pytorch_bf16.json"
      ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
