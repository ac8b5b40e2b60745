"""Train SoundStorm on a token dataset with Accelerate: masked-token loss, evaluation, checkpoints, Hub push.

    soundstorm-hf train --dataset-name tokens/ --output-dir runs/small --model-preset small
    soundstorm-hf train training/configs/train_paper_350m.yaml --dataset-name tokens/ --output-dir runs/paper
    accelerate launch --config_file training/configs/accelerate_ddp.yaml -m soundstorm_hf.training.train <same arguments>

A YAML or JSON file given first sets defaults; flags after it override them. The output folder ends up holding the
model (`save_pretrained`: weights, config, generation config), the codec and semantic tokenizer the tokens came
from (`codec/`, `semantic_tokenizer/`, named by the model config), a model card (README.md), the tracker logs
(`runs/`), decoded samples (`samples/`) and the rotating checkpoints (`checkpoints/`).

A run stops early, never saving non-finite weights, when the loss stays non-finite (exit status 1); on SIGTERM or
SIGINT it saves a checkpoint at the next step boundary and exits with 128 + the signal number (143, 130), so a
scheduler sees an interrupted run. `--resume-from-checkpoint latest` continues either; `--export-from-checkpoint
latest` writes the model folder from a checkpoint without training.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import soundfile
import torch
import yaml
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration, set_seed
from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import HfArgumentParser, get_scheduler

from ..adapters import ADAPTER_INFO_NAME, weights_fingerprint
from ..collator import SoundStormDataCollator, trim_to_common_duration
from ..configuration_soundstorm import SoundStormConfig
from ..data import (
    TOKEN_COLUMNS,
    TOKENS_INFO_NAME,
    LengthGroupedBatchSampler,
    TokenDatasetInfo,
    check_token_columns,
    frame_counts,
)
from ..modeling_soundstorm import SoundStormForConditionalGeneration, SoundStormModel, level_metrics
from ..text.t2s_training import CHECKED_CONFIG_FIELDS as T2S_CHECKED_FIELDS
from ..text.t2s_training import COLUMNS as T2S_COLUMNS
from ..text.t2s_training import T2STraining
from ..pipeline import CODEC_SUBFOLDER, SEMANTIC_SUBFOLDER
from ..tokenizers import load_acoustic_codec, load_semantic_tokenizer
from .command_line import prefer_dashes

logger = logging.getLogger("train")
CHECKPOINTS_FOLDER, CHECKPOINT_PREFIX, CHECKPOINT_STATE = "checkpoints", "checkpoint-", "trainer_state.json"
RESULTS_NAME = "all_results.json"  # written last into the output folder: its presence means the run finished
# The config fields a checkpoint must share with the run resuming it: what the weights mean, not where files live.
CHECKED_CONFIG_FIELDS = [
    name for name in inspect.signature(SoundStormConfig.__init__).parameters
    if name not in ("self", "kwargs", "codec_name_or_path", "semantic_tokenizer_name_or_path")
]
MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card.md"
# The attention and feed-forward projections of every Conformer block.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense")


@dataclass
class ModelArguments:
    task: str = field(
        default="soundstorm",
        metadata={"help": "soundstorm, or t2s: the text-to-semantic model (a LlamaForCausalLM, --model-preset tiny or "
                          "small) on the rows' text and semantic_ids (soundstorm_hf.text.t2s_training)."},
    )
    model_preset: str = field(default="small", metadata={"help": "tiny, small or paper (the 350M model)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Start from a trained SoundStorm instead."})
    config_overrides: str | None = field(
        default=None, metadata={"help": 'JSON of config fields over the preset, e.g. \'{"num_hidden_layers": 8}\'.'}
    )
    gradient_checkpointing: bool = field(default=False)
    lora_rank: int = field(
        default=0,
        metadata={"help": "Train LoRA adapters (peft) of this rank on --lora-target-modules of --model-name-or-path "
                          "instead of every weight, and save the adapter alone. 0: train every weight."},
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA scaling numerator (default: twice the rank)."})
    lora_dropout: float = field(default=0.0)
    lora_target_modules: str = field(
        default=",".join(LORA_TARGET_MODULES),
        metadata={"help": "Comma-separated module names (or suffixes) that get LoRA adapters."},
    )


@dataclass
class DataArguments:
    dataset_name: str = field(metadata={"help": "Token dataset from prepare_dataset.py: a folder or a Hub dataset id."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Held-out token dataset (default: a split)."})
    eval_split_size: float = field(default=0.02, metadata={"help": "Held-out share (< 1) or row count (>= 1)."})
    max_frames: int = field(default=1500, metadata={"help": "Random crops of at most this many acoustic frames."})
    min_frames: int = field(default=25, metadata={"help": "Rows shorter than this (acoustic frames) are left out."})
    min_crop_frames: int | None = field(
        default=None,
        metadata={"help": "Draw each training window's length uniformly between this and --max-frames (the paper's "
                          "random 0-30 s windows). Unset: only rows longer than --max-frames are cut, to it."},
    )
    max_frames_per_batch: int | None = field(
        default=None,
        metadata={"help": "Batch by a budget of padded frames (rows x longest) instead of --per-device-batch-size: rows "
                          "of similar length together, as many as fit, so that each step fills the device alike."},
    )
    dataloader_num_workers: int = field(default=0)


@dataclass
class TrainingArguments:
    output_dir: str
    seed: int = 0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Any transformers scheduler name."})
    warmup_steps: int = 1000
    max_steps: int = 100_000
    max_seconds: float | None = field(
        default=None,
        metadata={"help": "Wall-clock budget of the run, loading included: at the first logging step past it, the run "
                          "ends as at --max-steps (evaluation, checkpoint, model folder). Default: none."},
    )
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, fp16 or bf16 (autocast over fp32 weights; default: accelerate config)."}
    )
    compile_blocks: bool = field(
        default=False,
        metadata={"help": "torch.compile each Conformer block (regional: one block is compiled and reused, so compiling "
                          "takes seconds, not minutes). Pays off on a GPU."},
    )
    logging_steps: int = 50
    eval_steps: int = 1000
    save_steps: int = 1000
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept; older ones are deleted."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint folder, or `latest`. A changed learning rate, weight decay, Adam betas or "
                  "batch size is applied from there on (and logged)."},
    )
    export_from_checkpoint: str | None = field(
        default=None, metadata={"help": "Write the model folder from this checkpoint (or `latest`) and stop: no training."}
    )
    max_nonfinite_steps: int = field(
        default=3, metadata={"help": "Steps with a non-finite loss skipped in a row (no update) before the run stops."}
    )
    num_audio_samples: int = field(default=2, metadata={"help": "Held-out rows regenerated and logged as audio."})
    prompt_seconds: float = field(default=3.0, metadata={"help": "Voice prompt of each generated sample."})
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop once the held-out loss has not improved for this many evaluations (it is also measured "
                          "before the first step) and keep the weights of the best one. Default: train to --max-steps."},
    )
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "Smallest decrease that counts as better."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate tracker(s), comma-separated, or none."})
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False


def make_parser(prog: str | None = None) -> HfArgumentParser:
    return prefer_dashes(HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), prog=prog, description=__doc__.split("\n\n")[0]))


def parse_arguments(argv: list[str], prog: str | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Flags, optionally after a YAML/JSON file of defaults (later flags win).

    In the file, `null` leaves the default and a mapping or list (`config_overrides`) is passed on as JSON.
    """
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        defaults = yaml.safe_load(Path(argv[0]).read_text())  # YAML is a superset of JSON
        argv = [
            item for key, value in defaults.items() if value is not None
            for item in (f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value))
        ] + argv[1:]
    return make_parser(prog).parse_args_into_dataclasses(argv)


def check_arguments(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> None:
    """Refuse, before anything is loaded, arguments that would fail later (the command line makes it a usage error)."""
    counts = dict(
        per_device_batch_size=args.per_device_batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps, logging_steps=args.logging_steps, eval_steps=args.eval_steps,
        save_steps=args.save_steps, save_total_limit=args.save_total_limit, max_frames=data_args.max_frames,
    )
    problems = [f"--{name.replace('_', '-')} {value} (must be at least 1)" for name, value in counts.items() if value < 1]
    if data_args.max_frames_per_batch is not None and data_args.max_frames_per_batch < data_args.max_frames:
        problems.append(f"--max-frames-per-batch {data_args.max_frames_per_batch} (must be at least --max-frames {data_args.max_frames})")
    if data_args.min_crop_frames is not None and not 1 <= data_args.min_crop_frames <= data_args.max_frames:
        problems.append(f"--min-crop-frames {data_args.min_crop_frames} (must lie between 1 and --max-frames {data_args.max_frames})")
    if model_args.task not in ("soundstorm", "t2s"):
        problems.append(f"--task {model_args.task} (must be soundstorm or t2s)")
    if not args.learning_rate > 0:
        problems.append(f"--learning-rate {args.learning_rate} (must be positive)")
    if args.early_stopping_patience is not None and args.early_stopping_patience < 1:
        problems.append(f"--early-stopping-patience {args.early_stopping_patience} (must be at least 1)")
    if model_args.lora_rank < 0:
        problems.append(f"--lora-rank {model_args.lora_rank} (must be 0 or more)")
    if model_args.lora_rank and not model_args.model_name_or_path:
        problems.append("--lora-rank without --model-name-or-path (LoRA adapts a trained model)")
    if model_args.lora_rank and model_args.task != "soundstorm":
        problems.append(f"--lora-rank with --task {model_args.task} (LoRA is for SoundStorm fine-tuning)")
    if model_args.lora_rank and importlib.util.find_spec("peft") is None:
        problems.append("--lora-rank needs peft: pip install 'soundstorm-hf[lora]'")
    if args.max_nonfinite_steps < 0:
        problems.append(f"--max-nonfinite-steps {args.max_nonfinite_steps} (must be 0 or more)")
    try:
        overrides = json.loads(model_args.config_overrides or "{}")
    except json.JSONDecodeError as error:
        overrides = error
    if not isinstance(overrides, dict):
        problems.append(f"--config-overrides {model_args.config_overrides!r} (must be a JSON object of config fields)")
    try:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.output_dir).close()
    except OSError as error:
        problems.append(f"--output-dir {args.output_dir} (not writable: {error.strerror})")
    for flag, name in (("--resume-from-checkpoint", args.resume_from_checkpoint), ("--export-from-checkpoint", args.export_from_checkpoint)):
        if name not in (None, "latest") and not Path(name).is_dir():
            problems.append(f"{flag} {name} (no such folder)")
    if args.export_from_checkpoint == "latest" and find_checkpoint(args, "latest") is None:
        problems.append(f"--export-from-checkpoint latest (no checkpoint in {checkpoint_root(args)})")
    if args.push_to_hub and not args.hub_model_id:
        problems.append("--push-to-hub without --hub-model-id")
    if problems:
        raise argparse.ArgumentError(None, "cannot train with " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# Data


def load_token_dataset(name: str) -> tuple[datasets.Dataset, TokenDatasetInfo, Path]:
    """A token dataset, its info and the local folder holding that info (and any tokenizers saved with it)."""
    if Path(name).is_dir():
        dataset, location = datasets.load_from_disk(name), Path(name)
    else:
        dataset = datasets.load_dataset(name, split="train")
        location = Path(snapshot_download(
            name, repo_type="dataset", allow_patterns=[TOKENS_INFO_NAME, f"{CODEC_SUBFOLDER}/*", f"{SEMANTIC_SUBFOLDER}/*"]
        ))
    check_token_columns(dataset)
    return dataset, TokenDatasetInfo.load(location), location


def length_filtered(dataset: datasets.Dataset, min_frames: int, name: str) -> tuple[datasets.Dataset, list[int]]:
    """Rows of at least `min_frames` acoustic frames, and their lengths; an error when none is left."""
    lengths = frame_counts(dataset)
    keep = [index for index, length in enumerate(lengths) if length >= min_frames]
    if not keep:
        raise ValueError(
            f"Every row of the {name} dataset is shorter than --min-frames {min_frames} acoustic frames "
            f"(longest: {max(lengths, default=0)})."
        )
    if len(keep) < len(lengths):
        logger.warning("%s: %d of %d rows are shorter than %d frames and left out", name, len(lengths) - len(keep), len(lengths), min_frames)
        dataset = dataset.select(keep)
    return dataset, [lengths[index] for index in keep]


def make_loader(dataset, lengths, batch_size, data_args: DataArguments, shuffle, seed, columns=TOKEN_COLUMNS):
    """A loader of lists of rows of similar (cropped) length; they are cropped and masked by `masked_batch`."""
    sampler = LengthGroupedBatchSampler(
        [min(length, data_args.max_frames) for length in lengths], batch_size, shuffle, seed,
        max_frames_per_batch=data_args.max_frames_per_batch,
    )
    return torch.utils.data.DataLoader(
        dataset.with_format("torch", columns=list(columns)),
        batch_sampler=sampler,
        collate_fn=list,
        num_workers=data_args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds drawn here leave the global RNG alone
    )


def masked_batch(collator: SoundStormDataCollator, rows: list[dict], seed: int, device) -> dict[str, torch.Tensor]:
    """Crop, mask and pad `rows` with randomness drawn from `seed` alone.

    Masks are drawn in the training loop, not in the loader, because Accelerate's loader prepares the next batch
    ahead of time: masks drawn there from a running generator would depend on when the run was last resumed.
    """
    if hasattr(collator, "generator"):  # the T2S collator draws nothing
        collator.generator.manual_seed(seed)
    return {key: value.to(device) for key, value in collator(rows).items()}


# ---------------------------------------------------------------------------------------------------------------
# Model


def build_config(model_args: ModelArguments, info: TokenDatasetInfo) -> SoundStormConfig:
    """The preset (or pretrained) config, with the token grid taken from the dataset; checked against it."""
    overrides = json.loads(model_args.config_overrides or "{}")
    names = dict(codec_name_or_path=CODEC_SUBFOLDER, semantic_tokenizer_name_or_path=SEMANTIC_SUBFOLDER)
    if model_args.model_name_or_path:
        config = SoundStormConfig.from_pretrained(model_args.model_name_or_path, **overrides, **names)
    else:
        config = SoundStormConfig.from_preset(model_args.model_preset, **{**info.model_config_kwargs(), **overrides, **names})
    info.check(config)
    return config


def comparable(config) -> dict:
    names = CHECKED_CONFIG_FIELDS if isinstance(config, SoundStormConfig) else T2S_CHECKED_FIELDS
    return {name: getattr(config, name) for name in names}


def training_settings(args: TrainingArguments, accelerator: Accelerator) -> dict:
    """The optimizer settings and batch size a checkpoint records, so that a resume can say what it changes."""
    return dict(
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, adam_betas=[args.adam_beta1, args.adam_beta2],
        batch_size=args.per_device_batch_size * args.gradient_accumulation_steps * accelerator.num_processes,
    )


def differences(recorded: dict, current: dict) -> dict[str, tuple]:
    """`{key: (recorded value, current value)}` for every key on which the two disagree."""
    return {key: (recorded.get(key), current.get(key)) for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)}


def describe(changed: dict[str, tuple]) -> str:
    return ", ".join(f"{key}: checkpoint {old!r} vs now {new!r}" for key, (old, new) in changed.items())


def with_lora(model: SoundStormForConditionalGeneration, model_args: ModelArguments):
    """`model` wrapped by peft with LoRA adapters, only those trainable, and what the saved adapter records of its base
    (name and weights fingerprint, which `SoundStormPipeline.from_pretrained(base, adapter=...)` checks)."""
    from peft import LoraConfig, get_peft_model

    base = {"base_model": model_args.model_name_or_path, "base_fingerprint": weights_fingerprint(model)}
    config = LoraConfig(
        r=model_args.lora_rank,
        lora_alpha=model_args.lora_alpha or 2 * model_args.lora_rank,
        lora_dropout=model_args.lora_dropout,
        target_modules=[name.strip() for name in model_args.lora_target_modules.split(",") if name.strip()],
        base_model_name_or_path=model_args.model_name_or_path,
    )
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA rank %d on %s: %d of %d parameters trained", config.r, sorted(config.target_modules), trainable, total)
    return model, base


class EarlyStopping:
    """Ends a run whose held-out loss has not improved for `patience` evaluations; remembers the best trainable
    weights (LoRA adapters alone are small) so that the run can end with them. Checkpoints keep its state, so a
    resumed run stops (and ends with the weights) as the uninterrupted one would."""

    STATE_NAME, WEIGHTS_NAME = "early_stopping.json", "early_stopping_best.safetensors"

    def __init__(self, patience: int, threshold: float):
        self.patience, self.threshold = patience, threshold
        self.best_loss, self.best_step, self.best_metrics, self.best_weights, self.worse = math.inf, 0, {}, {}, 0
        self.initial_loss = math.nan  # the held-out loss before the first step

    def should_stop(self, model, metrics: dict[str, float], step: int) -> bool:
        loss = metrics["eval/loss"]  # NaN never counts as better
        if loss < self.best_loss - self.threshold:
            self.best_loss, self.best_step, self.best_metrics, self.worse = loss, step, metrics, 0
            self.best_weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
            return False
        self.worse += 1
        return self.worse >= self.patience

    @torch.no_grad()
    def restore_best(self, model) -> None:
        for name, parameter in model.named_parameters():
            if name in self.best_weights:
                parameter.copy_(self.best_weights[name])

    def save(self, folder: Path) -> None:
        state = {key: getattr(self, key) for key in ("best_loss", "best_step", "best_metrics", "worse", "initial_loss")}
        (folder / self.STATE_NAME).write_text(json.dumps(state, indent=2))  # JSON's Infinity and NaN read back
        save_file({name: tensor.contiguous().cpu() for name, tensor in self.best_weights.items()}, folder / self.WEIGHTS_NAME)

    def load(self, folder: Path, device) -> bool:
        """Restores the state saved in checkpoint `folder`; False when it has none (a run without early stopping)."""
        if not (folder / self.STATE_NAME).is_file():
            return False
        for key, value in json.loads((folder / self.STATE_NAME).read_text()).items():
            setattr(self, key, value)
        self.best_weights = {name: tensor.to(device) for name, tensor in load_file(folder / self.WEIGHTS_NAME).items()}
        return True


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: `checkpoints/checkpoint-<step>`, each written under a temporary name and renamed once complete.


def checkpoint_root(args: TrainingArguments) -> Path:
    return Path(args.output_dir) / CHECKPOINTS_FOLDER


def save_checkpoint(accelerator: Accelerator, args: TrainingArguments, step: int, config: SoundStormConfig, model,
                    stopper: EarlyStopping | None = None) -> Path:
    check_finite_weights(accelerator, model, step, args)
    root = checkpoint_root(args)
    final, temporary = root / f"{CHECKPOINT_PREFIX}{step}", root / f"tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every process writes its own part (RNG states, FSDP shards)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "model_config": comparable(config), "training": training_settings(args, accelerator)}
        if stopper is not None:
            stopper.save(temporary)
        (temporary / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(args: TrainingArguments) -> None:
    """Keep the newest `save_total_limit` checkpoints. Called (on the main process) only once a finite loss has been
    computed with the newest one's weights, so a diverging run never deletes its last good checkpoint."""
    for old in list_checkpoints(args)[: -args.save_total_limit]:
        shutil.rmtree(old)


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def list_checkpoints(args: TrainingArguments) -> list[Path]:
    """This script's checkpoints, oldest first; other folders (`checkpoint-best`, a copy) are left alone."""
    found = checkpoint_root(args).glob(f"{CHECKPOINT_PREFIX}*")
    return sorted((path for path in found if path.name[len(CHECKPOINT_PREFIX):].isdecimal()), key=checkpoint_step)


def find_checkpoint(args: TrainingArguments, name: str) -> Path | None:
    """A checkpoint named on the command line: the given folder, the newest one for `latest` (None if none yet)."""
    if name != "latest":
        return Path(name)
    found = list_checkpoints(args)
    return found[-1] if found else None


def load_checkpoint(accelerator: Accelerator, path: Path, config: SoundStormConfig) -> dict:
    """Restore model, optimizer, scheduler and RNG states from `path`; return its trainer state. Refuse another config."""
    state_file = path / CHECKPOINT_STATE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint of this script (no {CHECKPOINT_STATE}).")
    state = json.loads(state_file.read_text())
    changed = differences(state["model_config"], comparable(config))
    if changed:
        raise ValueError(f"Checkpoint {path} was made with another model config ({describe(changed)}).")
    accelerator.load_state(str(path))
    return state


def apply_training_settings(args: TrainingArguments, optimizer, scheduler) -> None:
    """Put this run's optimizer settings over those restored from a checkpoint; the schedule keeps its shape.

    `load_state` restores the checkpoint's learning rate (in the optimizer and the scheduler's base rates), weight
    decay and betas; the scheduler's factor at this step is kept and applied to the new rate.
    """
    for group in optimizer.param_groups:
        group["lr"] *= args.learning_rate / group["initial_lr"]
        group.update(initial_lr=args.learning_rate, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2))
    scheduler.scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]


# ---------------------------------------------------------------------------------------------------------------
# Stopping early: divergence and signals


class RunStopped(Exception):
    """The run ended before `max_steps`; `exit_code` is the status the command line exits with."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def diverged(args: TrainingArguments, step: int, what: str, good_before: int) -> RunStopped:
    """The stop of a diverged run, naming the newest checkpoint older than `good_before` (whose weights gave a finite loss)."""
    good = [path for path in list_checkpoints(args) if checkpoint_step(path) < good_before]
    last = f"resume from {good[-1]} with a lower --learning-rate" if good else "there is no good checkpoint to resume from"
    return RunStopped(f"Training diverged at step {step}: {what}. Nothing more was saved; {last}.", 1)


def check_finite_weights(accelerator: Accelerator, model, step: int, args: TrainingArguments) -> None:
    """Raise `RunStopped` rather than evaluate or save weights holding a NaN or inf (on any process)."""
    bad = sum((~parameter.detach().isfinite()).sum() for parameter in model.parameters())
    if accelerator.reduce(torch.as_tensor(bad, device=accelerator.device), reduction="sum").item():
        raise diverged(args, step, "the weights hold non-finite values", good_before=step)


def skip_update_unless_finite(optimizer, checks: torch.Tensor) -> None:
    """Makes the next step of the fused AdamW a no-op on the device when `checks` (loss, gradient norm) hold a NaN or
    inf: weights, moments and step count stay as they were, and the host never waits for the device to decide. (Under
    fp16 the loss scaler sets the same flag from the gradients.)"""
    optimizer.optimizer.found_inf = (~checks.sum().isfinite()).float()  # the attribute fused kernels (and GradScaler) use


class PendingSteps:
    """Each optimizer step's summed (loss, gradient norm), kept on the device until the loop reads them all in one
    transfer (at logging, evaluation and checkpoint steps): reading them every step would stall the GPU's queue."""

    def __init__(self):
        self.steps, self.checks = [], []

    def add(self, step: int, checks: torch.Tensor) -> None:
        self.steps.append(step)
        self.checks.append(checks)

    def read(self) -> list[tuple[int, float, float]]:
        """`(step, loss sum, gradient norm sum)` of every step since the last read."""
        values = torch.stack(self.checks).tolist() if self.checks else []
        read = [(step, loss, norm) for step, (loss, norm) in zip(self.steps, values)]
        self.steps, self.checks = [], []
        return read


class StopSignals:
    """Turns SIGTERM and SIGINT (a preempted job, Ctrl-C) into a request to stop at the next step boundary.

    The first signal only sets `received`; it also puts the previous handlers back, so a second one acts at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> StopSignals:
        self.received = None
        self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, number, frame) -> None:
        self.received = number
        self.__exit__()

    def __exit__(self, *exc_info) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model, loader, accelerator: Accelerator, collator: SoundStormDataCollator, seed: int) -> dict[str, float]:
    """Masked-token loss and accuracy on the held-out set, overall and per RVQ level.

    Every evaluation scores the same crops and masks: they are drawn from `seed` and the batch index.
    """
    model.eval()
    num_levels = accelerator.unwrap_model(model).config.num_levels
    totals = torch.zeros(3, num_levels, device=accelerator.device)  # loss sum, correct, targets; per level
    for index, rows in enumerate(loader):
        batch = masked_batch(collator, rows, hash((seed, accelerator.process_index, index)), accelerator.device)
        metrics = level_metrics(model(**batch).logits, batch["labels"])
        counts = metrics["level_num_targets"].float()
        present = counts > 0  # a level without targets adds nothing; a NaN loss stays NaN
        totals[0] += torch.where(present, metrics["level_loss"] * counts, 0.0)
        totals[1] += torch.where(present, metrics["level_accuracy"] * counts, 0.0)
        totals[2] += counts
    totals = accelerator.reduce(totals, reduction="sum").cpu()
    model.train()
    metrics = {
        "eval/loss": (totals[0].sum() / totals[2].sum()).item(),
        "eval/accuracy": (totals[1].sum() / totals[2].sum()).item(),
    }
    for level in range(num_levels):
        if totals[2, level] > 0:
            metrics[f"eval/loss_level_{level + 1}"] = (totals[0, level] / totals[2, level]).item()
            metrics[f"eval/accuracy_level_{level + 1}"] = (totals[1, level] / totals[2, level]).item()
    return metrics


class SampleWriter:
    """Regenerates a few held-out rows from their first seconds and the full semantic tokens, decodes and logs them.

    Generation runs on the main process with a plain copy of the weights, gathered with `get_state_dict` (which every
    process must call), so it works the same under DDP and FSDP.
    """

    def __init__(self, rows, config, codec, args: TrainingArguments, max_frames: int):
        self.codec, self.args = codec, args
        self.examples = []
        for row in rows:
            semantic, acoustic = trim_to_common_duration(torch.as_tensor(row["semantic_ids"]).long(), torch.as_tensor(row["acoustic_ids"]).long(), config)
            acoustic = acoustic[:, :max_frames]
            semantic = semantic[: config.num_semantic_frames(acoustic.shape[-1])]
            self.examples.append((semantic, acoustic))
        self.prompt_frames = round(args.prompt_seconds * config.acoustic_frame_rate)
        self.model = None

    def __call__(self, accelerator: Accelerator, model, step: int) -> None:
        if not self.examples:
            return
        state_dict = accelerator.get_state_dict(model)
        if not accelerator.is_main_process:
            return
        if self.model is None:
            unwrapped = accelerator.unwrap_model(model)
            self.model = SoundStormForConditionalGeneration(unwrapped.config)
            if hasattr(unwrapped, "peft_config"):  # wrapped alike, so that the gathered state dict's names fit
                from peft import get_peft_model

                self.model = get_peft_model(self.model, unwrapped.active_peft_config)
            self.model = self.model.to(accelerator.device).eval()
            self._log(accelerator, "reference", [acoustic for _, acoustic in self.examples], 0)
        self.model.load_state_dict(state_dict)
        generated = []
        with accelerator.autocast():
            for semantic, acoustic in self.examples:
                prompt = acoustic[:, : min(self.prompt_frames, acoustic.shape[-1] - 1)]
                generated.append(self.model.generate(semantic[None].to(accelerator.device), prompt_ids=prompt[None].to(accelerator.device), seed=self.args.seed)[0])
        self._log(accelerator, "generated", generated, step)

    def _log(self, accelerator: Accelerator, kind: str, codes_list, step: int) -> None:
        folder = Path(self.args.output_dir) / "samples" / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        rate = self.codec.sampling_rate
        for index, codes in enumerate(codes_list):
            audio = self.codec.decode(codes[None].to(self.codec.device))[0].float().cpu()
            tag = f"{kind}/{index}"
            soundfile.write(folder / f"{kind}-{index}.wav", audio.numpy(), rate)
            for tracker in accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.writer.add_audio(tag, audio[None], step, sample_rate=rate)
                elif tracker.name == "wandb":
                    import wandb

                    tracker.log({tag: wandb.Audio(audio.numpy(), sample_rate=rate)}, step=step)


# ---------------------------------------------------------------------------------------------------------------
# Saving and publishing


def render_model_card(output_dir: Path, args: TrainingArguments, data_args: DataArguments, info: TokenDatasetInfo,
                      config: SoundStormConfig, step: int, metrics: dict[str, float]) -> ModelCard:
    """The model card, from the `model_card.md` template and what this run actually did."""
    source = info.source.get("name")
    card_data = ModelCardData(
        library_name="soundstorm-hf",
        license="apache-2.0",
        tags=["soundstorm", "audio", "text-to-speech", "audio-tokens"],
        datasets=[source] if source and not Path(source).exists() else None,
        pipeline_tag="text-to-speech",
    )
    num_parameters = sum(math.prod(shape) for shape in _parameter_shapes(config))
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_id=args.hub_model_id or output_dir.name,
        dataset=info.source,
        dataset_name=data_args.dataset_name,
        hours=info.hours,
        num_rows=info.num_rows,
        info=info,
        config=config,
        num_parameters=num_parameters,
        steps=step,
        batch_size=args.per_device_batch_size * args.gradient_accumulation_steps,
        args=args,
        max_frames=data_args.max_frames,
        metrics={key.removeprefix("eval/"): round(value, 4) for key, value in metrics.items()},
    )


def render_adapter_card(args: TrainingArguments, info: TokenDatasetInfo, base: dict, lora, step: int,
                        metrics: dict[str, float]) -> ModelCard:
    """The card of a LoRA adapter: which base it needs (the adapter is useless without it) and how to load it."""
    name = base["base_model"]
    card_data = ModelCardData(
        library_name="peft", license="apache-2.0", tags=["soundstorm", "lora", "voice", "audio"],
        base_model=name if name.count("/") == 1 and not Path(name).exists() else None,  # metadata takes Hub ids only
    )
    figures = "\n".join(f"| {key.removeprefix('eval/')} | {value:.4g} |" for key, value in metrics.items())
    model_id = args.hub_model_id or Path(args.output_dir).name
    text = f"""---
{card_data.to_yaml()}
---

# {model_id}

A LoRA adapter for the SoundStorm model **`{name}`** (weights fingerprint `{base["base_fingerprint"]}`), trained with
`soundstorm-hf` on {info.num_rows} pieces ({(info.hours or 0) * 60:.1f} minutes) of one speaker's recordings: rank
{lora.r}, alpha {lora.lora_alpha}, on `{", ".join(sorted(lora.target_modules))}`; {step} steps. It only works on top of
that base model, which also holds the codec and the semantic tokenizer.

```python
from soundstorm_hf.pipeline import SoundStormPipeline

pipe = SoundStormPipeline.from_pretrained("{name}", adapter="{model_id}")
```

or `soundstorm-hf tts "Hello there." out.wav --model {name} --adapter {model_id}`.

## Held-out evaluation

| metric | value |
|---|---|
{figures}
"""
    return ModelCard(text)


def _parameter_shapes(config: SoundStormConfig):
    with torch.device("meta"):
        return [p.shape for p in SoundStormForConditionalGeneration(config).parameters()]


def push_to_hub(output_dir: Path, repo_id: str, private: bool = False) -> str:
    """Create the model repo if needed and upload the final folder (not the checkpoints); returns the commit URL."""
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        ignore_patterns=[f"{CHECKPOINTS_FOLDER}/*", "samples/*"],
        commit_message="Upload SoundStorm model",
    )
    return str(commit)


def save_final(accelerator, model, codec, semantic_tokenizer, args, data_args, info, step, metrics, t2s=None, adapter_base=None) -> None:
    """The model folder; for `--task t2s` the T2S folder (`T2STraining.save`), without SoundStorm's tokenizers and card;
    for a LoRA run (`adapter_base` set) the adapter alone, naming its base."""
    check_finite_weights(accelerator, model, step, args)
    state_dict = accelerator.get_state_dict(model)  # gathered on every process (FSDP), used on the main one
    if not accelerator.is_main_process:
        return
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    staging = output_dir / "tmp-final"  # complete files only ever appear under their final names
    shutil.rmtree(staging, ignore_errors=True)
    if t2s:
        t2s.save(staging, unwrapped, state_dict)
    elif adapter_base:  # the tokenizers stay with the base model
        unwrapped.save_pretrained(staging, state_dict=state_dict)
        (staging / ADAPTER_INFO_NAME).write_text(json.dumps({**adapter_base, "step": step}, indent=2) + "\n")
        render_adapter_card(args, info, adapter_base, unwrapped.active_peft_config, step, metrics).save(staging / "README.md")
    else:
        unwrapped.save_pretrained(staging, state_dict=state_dict)
        codec.save_pretrained(staging / CODEC_SUBFOLDER)
        semantic_tokenizer.save_pretrained(staging / SEMANTIC_SUBFOLDER)
        render_model_card(output_dir, args, data_args, info, unwrapped.config, step, metrics).save(staging / "README.md")
    (staging / RESULTS_NAME).write_text(json.dumps({"step": step, **metrics}, indent=2) + "\n")
    for path in sorted(staging.iterdir(), key=lambda path: path.name == RESULTS_NAME):  # the results last: finished
        target = output_dir / path.name
        if path.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
    staging.rmdir()
    logger.info("Model of step %d written to %s", step, output_dir)
    if args.push_to_hub:
        logger.info("Pushed to %s", push_to_hub(output_dir, args.hub_model_id, args.hub_private))


# ---------------------------------------------------------------------------------------------------------------


def main(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> dict[str, float]:
    check_arguments(model_args, data_args, args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to.split(","),
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "runs")),
        # Every level's head takes part in each backward pass (on zero rows when its level has no target), so DDP
        # need not search the graph for unused parameters.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(message)s")
    try:
        return train(accelerator, model_args, data_args, args)
    finally:
        release(accelerator)


def release(accelerator: Accelerator) -> None:
    """Free the DDP-wrapped model, then destroy the process group (`end_training`).

    The other order deadlocks now and then: when DDP's reducer drops the last reference to a gloo group, torch frees
    the group with the GIL held and waits for its worker threads, one of which may need the GIL to free a finished
    collective's tensors (a two-process run hung at exit about one time in five). An exception on its way up holds
    the training frame and so the model: its frames are cleared first.
    """
    error = sys.exc_info()[1]
    if error is not None:
        traceback.clear_frames(error.__traceback__)
    accelerator.free_memory()
    gc.collect()  # a reference cycle through the model must not be freed later, after the group
    accelerator.end_training()


def train(accelerator: Accelerator, model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> dict[str, float]:
    started = time.perf_counter()
    set_seed(args.seed, device_specific=True)  # each process draws its own crops, masks and dropout

    dataset, info, location = load_token_dataset(data_args.dataset_name)
    t2s = None
    if model_args.task == "t2s":
        overrides = json.loads(model_args.config_overrides or "{}")
        t2s = T2STraining(dataset, info, model_args.model_name_or_path, model_args.model_preset, overrides, data_args.max_frames)
    config = t2s.config if t2s else build_config(model_args, info)
    if data_args.eval_dataset_name:
        eval_dataset, eval_info, _ = load_token_dataset(data_args.eval_dataset_name)
        t2s.check(eval_info) if t2s else eval_info.check(config)
    else:
        size = data_args.eval_split_size
        split = dataset.train_test_split(test_size=int(size) if size >= 1 else size, seed=args.seed)
        dataset, eval_dataset = split["train"], split["test"]
    if t2s:
        dataset, eval_dataset = t2s.rows(dataset, "training"), t2s.rows(eval_dataset, "evaluation")
    dataset, lengths = length_filtered(dataset, data_args.min_frames, "training")
    eval_dataset, eval_lengths = length_filtered(eval_dataset, data_args.min_frames, "evaluation")
    codec = load_acoustic_codec(info.resolve(info.codec_name_or_path, location)).to(accelerator.device).eval()
    semantic_tokenizer = load_semantic_tokenizer(info.resolve(info.semantic_tokenizer_name_or_path, location))

    if t2s:
        model = t2s.model()
    elif model_args.model_name_or_path:
        # fp32 master weights whatever the checkpoint's dtype (the bundled default is stored in fp16): mixed
        # precision is Accelerate's job, and fp16 matrix products are slow on a CPU.
        model = SoundStormForConditionalGeneration.from_pretrained(
            model_args.model_name_or_path, config=config, dtype=torch.float32
        )
    else:
        model = SoundStormForConditionalGeneration(config)
    if model_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if args.compile_blocks:
        for block in (layer for module in model.modules() if isinstance(module, SoundStormModel) for layer in module.layers):
            block.compile(dynamic=True)  # in place: the state dict keeps its names
    adapter_base = None
    if model_args.lora_rank:
        model, adapter_base = with_lora(model, model_args)
    # Fused: one kernel for all parameters, and a step that `skip_update_unless_finite` can cancel on the device.
    optimizer = torch.optim.AdamW(
        [parameter for parameter in model.parameters() if parameter.requires_grad], lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay, fused=True,
    )
    # The prepared scheduler steps once per process at each optimizer step, hence the scaling.
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_steps * accelerator.num_processes,
    )
    collator = t2s.collator() if t2s else SoundStormDataCollator(
        config, max_frames=data_args.max_frames, min_frames=data_args.min_crop_frames, seed=args.seed
    )
    columns = T2S_COLUMNS if t2s else TOKEN_COLUMNS
    train_loader = make_loader(dataset, lengths, args.per_device_batch_size, data_args, True, args.seed, columns)
    eval_loader = make_loader(eval_dataset, eval_lengths, args.per_device_batch_size, data_args, False, args.seed, columns)
    train_sampler = train_loader.batch_sampler  # kept: accelerate's wrappers do not pass `set_epoch` on to it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    # Sharded across processes; rows stay on the CPU until `masked_batch` has made them a batch.
    train_loader, eval_loader = (accelerator.prepare_data_loader(loader, device_placement=False) for loader in (train_loader, eval_loader))
    sample_rows = eval_dataset.select(range(min(args.num_audio_samples, len(eval_dataset))))
    samples = t2s.sample_writer(sample_rows, args.output_dir) if t2s else SampleWriter(sample_rows, config, codec, args, data_args.max_frames)
    evaluation = t2s.evaluate if t2s else evaluate

    step = 0
    checkpoint_name = args.export_from_checkpoint or args.resume_from_checkpoint
    checkpoint = find_checkpoint(args, checkpoint_name) if checkpoint_name else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, config)
        step = state["step"]
        apply_training_settings(args, optimizer, scheduler)
        logger.info("Resumed from %s at step %d", checkpoint, step)
        settings = training_settings(args, accelerator)
        changed = differences(state.get("training", settings), settings)
        if changed:
            logger.warning("Training settings changed since the checkpoint, applied from step %d on: %s", step, describe(changed))
    last_step = step if args.export_from_checkpoint else args.max_steps
    if accelerator.is_main_process and step < last_step:
        accelerator.init_trackers("soundstorm", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    epoch, batches_to_skip = divmod(step, steps_per_epoch)
    batches_to_skip *= args.gradient_accumulation_steps
    logger.info("%d training rows, %d held out; %d optimizer steps per epoch on %d process(es)", len(dataset), len(eval_dataset), steps_per_epoch, accelerator.num_processes)

    stopper = None
    if args.early_stopping_patience and step < last_step:
        stopper = EarlyStopping(args.early_stopping_patience, args.early_stopping_threshold)
        if checkpoint is not None and stopper.load(checkpoint, accelerator.device):
            logger.info("Early stopping resumed: best held-out loss %.4f at step %d", stopper.best_loss, stopper.best_step)
            if stopper.worse >= stopper.patience:  # the checkpoint's run had stopped there
                last_step = step
        else:
            stopper.initial_loss = evaluation(model, eval_loader, accelerator, collator, args.seed)["eval/loss"]
            stopper.should_stop(model, {"eval/loss": stopper.initial_loss}, step)
            logger.info("step %d: held-out loss before training %.4f", step, stopper.initial_loss)

    model.train()
    metrics, running_loss, running_steps, grad_norm = {}, 0.0, 0, math.nan
    step_loss, pending = torch.zeros((), device=accelerator.device), PendingSteps()
    nonfinite_in_a_row, frames, padded_frames, clock = 0, torch.zeros((), device=accelerator.device), 0, time.perf_counter()
    unconfirmed_checkpoint = False  # the newest checkpoint's weights have not given a finite loss yet
    progress = tqdm(total=last_step, initial=step, desc="training", unit="step", disable=not accelerator.is_main_process or step >= last_step)
    with StopSignals() as stop, logging_redirect_tqdm(), progress:
        while step < last_step:
            # The batch order depends on the epoch only, so a resumed run sees the same batches. Accelerate's loader
            # re-applies its own epoch counter when iterated but does not reach a batch sampler under its wrappers: set both.
            train_sampler.set_epoch(epoch)
            loader = accelerator.skip_first_batches(train_loader, batches_to_skip) if batches_to_skip else train_loader
            loader.set_epoch(epoch)
            skipped, batches_to_skip = batches_to_skip, 0
            for index, rows in enumerate(loader, start=skipped):
                batch = masked_batch(collator, rows, hash((args.seed, accelerator.process_index, epoch, index)), accelerator.device)
                frames += batch["attention_mask"].sum()  # on the device: read when logged
                padded_frames += batch["attention_mask"].numel()  # (batch, frames)
                with accelerator.accumulate(model):
                    output = model(**batch)
                    accelerator.backward(output.loss)
                    step_loss += output.loss.detach().float() / args.gradient_accumulation_steps
                    if accelerator.sync_gradients:
                        norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        # Summed over processes, so that every process takes the same decision: a sum is finite only
                        # if every term is. Under fp16 the loss scaler itself skips steps with inf gradients.
                        checks = accelerator.reduce(torch.stack([step_loss, norm.float()]), reduction="sum")
                        skip_update_unless_finite(optimizer, checks if accelerator.scaler is None else checks[:1])
                        optimizer.step()
                        scheduler.step()  # the schedule counts skipped steps too: deciding would read the device
                    optimizer.zero_grad()
                if not accelerator.sync_gradients:
                    continue
                step += 1
                progress.update()
                pending.add(step, checks)
                step_loss = torch.zeros_like(step_loss)
                logging_now = step % args.logging_steps == 0 or step == last_step
                scheduled = logging_now or step % args.eval_steps == 0 or step % args.save_steps == 0
                # The device is read (one transfer) where every process reads it, or when this lone process is stopped.
                if not (scheduled or (stop.received is not None and accelerator.num_processes == 1)):
                    continue
                for pending_step, loss_sum, norm_sum in pending.read():
                    grad_norm = norm_sum / accelerator.num_processes
                    if math.isfinite(loss_sum + (norm_sum if accelerator.scaler is None else 0.0)):
                        running_loss += loss_sum / accelerator.num_processes
                        running_steps += 1
                        nonfinite_in_a_row = 0
                        if unconfirmed_checkpoint and accelerator.is_main_process:
                            rotate_checkpoints(args)
                        unconfirmed_checkpoint = False
                        continue
                    nonfinite_in_a_row += 1
                    what = f"non-finite loss {loss_sum} (gradient norm {norm_sum}) {nonfinite_in_a_row} step(s) in a row"
                    if nonfinite_in_a_row > args.max_nonfinite_steps or pending_step == last_step:
                        # The weights of the step before the first non-finite loss are suspect too.
                        raise diverged(args, pending_step, what, good_before=pending_step - nonfinite_in_a_row)
                    logger.warning("step %d: %s, update skipped (the run stops at %d)", pending_step, what, args.max_nonfinite_steps + 1)
                out_of_time = args.max_seconds is not None and time.perf_counter() - started > args.max_seconds
                stop_requests, late = accelerator.reduce(torch.tensor([float(stop.received is not None), float(out_of_time)], device=accelerator.device), reduction="sum").tolist()
                if late and step < last_step:
                    logger.info("step %d: --max-seconds %g reached, ending the run here", step, args.max_seconds)
                    last_step = progress.total = step
                    logging_now = True
                if logging_now:
                    # NaN when every step since the last log was skipped: never reported as a loss of 0.
                    loss = running_loss / running_steps if running_steps else math.nan
                    # Frames the model attends to (a dropped voice prompt counts as padding), on every process.
                    attended = accelerator.reduce(frames, reduction="sum").item()
                    frames_per_second = attended / (time.perf_counter() - clock)
                    logs = {"train/loss": loss, "train/learning_rate": scheduler.get_last_lr()[0], "train/grad_norm": grad_norm,
                            "train/epoch": epoch, "train/frames_per_second": frames_per_second,
                            "train/padding": 1 - attended / (padded_frames * accelerator.num_processes)}
                    accelerator.log(logs, step=step)
                    logger.info("step %d: %s", step, {k: round(v, 5) for k, v in logs.items()})
                    progress.set_postfix_str(f"loss {loss:.4f}, {frames_per_second:.0f} frames/s")
                    running_loss, running_steps, padded_frames, clock = 0.0, 0, 0, time.perf_counter()
                    frames.zero_()
                if step % args.eval_steps == 0 or step == last_step:
                    check_finite_weights(accelerator, model, step, args)
                    metrics = evaluation(model, eval_loader, accelerator, collator, args.seed)
                    accelerator.log(metrics, step=step)
                    logger.info("step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
                    samples(accelerator, model, step)
                    if stopper is not None and stopper.should_stop(model, metrics, step) and step < last_step:
                        logger.info("step %d: no better held-out loss in %d evaluations, stopping", step, stopper.patience)
                        last_step = progress.total = step
                stopping = stop_requests > 0 and step < last_step
                if step % args.save_steps == 0 or step == last_step or stopping:
                    saved = save_checkpoint(accelerator, args, step, config, model, stopper)
                    unconfirmed_checkpoint = True
                if stopping:
                    number = stop.received or signal.SIGTERM  # the signal may have reached another process only
                    raise RunStopped(
                        f"Stopped by {signal.Signals(number).name} at step {step}; checkpoint saved in {saved}: "
                        "the same command with --resume-from-checkpoint latest continues the run.", 128 + number
                    )
                if step >= last_step:
                    break
            epoch += 1

    if stopper is not None:
        if stopper.best_step != step:
            stopper.restore_best(model)
            metrics = stopper.best_metrics or evaluation(model, eval_loader, accelerator, collator, args.seed)
            logger.info("Kept the weights of step %d (held-out loss %.4f)", stopper.best_step, stopper.best_loss)
        metrics = {**metrics, "eval/initial_loss": stopper.initial_loss, "eval/best_step": stopper.best_step}
    if not metrics:  # resumed at max_steps or exporting: nothing was trained, but the card still needs figures
        metrics = evaluation(model, eval_loader, accelerator, collator, args.seed)
    accelerator.wait_for_everyone()
    save_final(accelerator, model, codec, semantic_tokenizer, args, data_args, info, step, metrics, t2s, adapter_base)
    if accelerator.is_main_process:
        rotate_checkpoints(args)
    return metrics


def cli(argv: list[str], prog: str | None = None) -> None:
    """The command line: arguments that cannot work are a usage error (exit 2); a run stopped early exits with the
    status of `RunStopped` after one line saying why."""
    try:
        main(*parse_arguments(argv, prog))
    except argparse.ArgumentError as error:
        make_parser(prog).error(str(error))
    except RunStopped as stop:
        logger.error("%s", stop)
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    cli(sys.argv[1:])
