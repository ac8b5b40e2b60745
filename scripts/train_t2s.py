"""Train the default text-to-semantic model on the default corpus's token datasets, resumably (train.py --task t2s).

    python scripts/train_t2s.py --tokens /work/data/default --output /work/data/default_t2s [--steps 4000] \
        [--install-into src/soundstorm_hf/default] [-- more train.py flags]

`--tokens` holds `tokens_train` and `tokens_val` from scripts/build_default_model.sh (step 4: the same token
datasets SoundStorm trains on; prepare_dataset.py keeps their `text`). Re-running the command continues from the
newest checkpoint; the log is appended to OUTPUT/train.log. `--install-into` copies the finished model into the
SoundStorm model folder's `t2s/` subfolder, where `TextToSpeech.from_pretrained` finds it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

# The shipped recipe: `small` preset (width 256, 6 layers), batch 32, on CPU or GPU.
RECIPE = [
    "--task", "t2s", "--model_preset", "small", "--per_device_batch_size", "32", "--learning_rate", "1e-3",
    "--warmup_steps", "200", "--lr_scheduler_type", "cosine", "--logging_steps", "25", "--eval_steps", "250",
    "--save_steps", "250", "--save_total_limit", "2", "--num_audio_samples", "2", "--min_frames", "1",
]
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def load_train():
    from soundstorm_hf.training import train

    return train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=Path, default=Path("/work/data/default"))
    parser.add_argument("--output", type=Path, default=Path("/work/data/default_t2s"))
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--install-into", type=Path, default=None, help="SoundStorm model folder that gets t2s/.")
    args, extra = parser.parse_known_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.output / "train.log")],
    )
    train = load_train()
    command = [
        "--dataset_name", str(args.tokens / "tokens_train"), "--eval_dataset_name", str(args.tokens / "tokens_val"),
        "--output_dir", str(args.output), "--max_steps", str(args.steps), *RECIPE,
    ]
    if any((args.output / train.CHECKPOINTS_FOLDER).glob(f"{train.CHECKPOINT_PREFIX}*")):
        command += ["--resume_from_checkpoint", "latest"]
    train.cli(command + [flag for flag in extra if flag != "--"])
    if args.install_into is not None:
        target = args.install_into / "t2s"
        target.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            shutil.copy2(args.output / name, target / name)
        logging.info("T2S model installed in %s", target)


if __name__ == "__main__":
    main()
