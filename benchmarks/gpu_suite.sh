#!/usr/bin/env bash
# The GPU runs recorded in benchmarks/results/gpu/ (the paper's preset on one CUDA device), one JSON each:
#   bash benchmarks/gpu_suite.sh OUT_DIR [eager] [compiled] [ar]
# Each run writes its JSON as it goes and is cut off by `timeout` (a lease is short), so an interrupted run
# keeps the cells it finished. SUITE_DEVICE / SUITE_PRESET (default cuda / paper) let the suite be tried end
# to end on a CPU with the tiny preset. soundstorm-pytorch must be importable for its part (see
# bench_soundstorm_pytorch.py); then `python benchmarks/make_report.py --results OUT_DIR`.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [eager] [compiled] [ar]}
shift
parts=${*:-eager compiled ar}
mkdir -p "$out"
bench=benchmarks
device=${SUITE_DEVICE:-cuda}
preset=${SUITE_PRESET:-paper}
generation() {  # generation SECONDS NAME ARGS...: one bench_generation run, bf16 unless ARGS say otherwise
  local limit=$1 name=$2
  shift 2
  timeout "$limit" python $bench/bench_generation.py --preset $preset --device $device --dtype bf16 "$@" \
    --out "$out/$name.json"
}
for part in $parts; do
  echo "== $part"
  case $part in
    eager)
      timeout 90 python -m pytest -q tests/test_gpu.py
      generation 90 generation_bf16_eager --durations 5 10 30 60 --batch-sizes 1 8 --repeats 5 --ar-durations
      generation 60 generation_fp32 --dtype fp32 --durations 5 30 --batch-sizes 1 8 --repeats 5 --ar-durations
      generation 60 generation_windowed --windowed --durations 30 60 120 --batch-sizes 1 --repeats 3 --ar-durations
      timeout 120 python $bench/bench_training.py --preset $preset --device $device --dtype bf16 \
        --cells 5:8 10:8 30:2 --steps 5 --out "$out/training_bf16.json"
      ;;
    compiled)
      generation 200 generation_compiled --compile --durations 5 30 --batch-sizes 1 8 --repeats 5 --ar-durations
      # reduce-overhead: every decoding pass replays a CUDA graph (the README's fast path).
      generation 360 generation_cudagraphs --compile --compile-mode reduce-overhead --durations 5 10 30 60 \
        --batch-sizes 1 8 --repeats 5 --ar-durations
      timeout 150 env PYTHONPATH="$bench/sspt_stubs:${PYTHONPATH:-}" python $bench/bench_soundstorm_pytorch.py \
        --preset $preset --device $device --dtype bf16 --durations 5 10 30 --repeats 5 \
        --out "$out/soundstorm_pytorch_bf16.json"
      ;;
    ar)
      # The AR baseline writes 3000 tokens for 5 s at 50 ms each (eager) or 8.6 ms each (static cache,
      # compiled): one timed call per cell, and only 5 s fits a lease.
      generation 330 generation_bf16_ar --durations 5 --batch-sizes 1 8 --repeats 5 --ar-durations 5 \
        --ar-repeats 1 --ar-warmup 0
      generation 370 generation_compiled_vs_ar_compiled --compile --compile-mode reduce-overhead --ar-compile \
        --durations 5 --batch-sizes 1 --repeats 5 --ar-durations 5 --ar-repeats 1 --ar-warmup 1
      ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
