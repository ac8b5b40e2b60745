#!/usr/bin/env bash
# One GPU round of training the default model (training/README.md, "A GPU round"), for one call of the GPU machine:
#
#   bash training/gpu_round.sh --tokens gpu/tokens_train --eval-tokens gpu/tokens_val [--init FOLDER] [--budget 570]
#
# Everything that comes back is written to $OUT (default runs/gpu_round): fp16 weight shards under 16 MiB,
# config.json, generation_config.json, round.json and this script's log, round.log. Other flags: gpu_round.py --help.
set -euo pipefail
started=$(date +%s.%N)  # the budget counts from here
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_round}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TQDM_MININTERVAL=30 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python training/gpu_round.py --started-at "$started" --output "$out" "$@" 2>&1 | tee "$out/round.log"
