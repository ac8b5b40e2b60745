"""Fine-tune SoundStorm on one speaker's recordings: a LoRA adapter (default) or the full model.

    soundstorm-hf finetune --audio my_voice/ --output my_voice_adapter [--base default|FOLDER|HUB_ID] [--lora|--full]
    soundstorm-hf finetune --audio user/voice-dataset --split train --output my_voice_adapter

The recordings (a folder of audio files in any format soundfile reads, at any rate, mono or stereo; or a `datasets`
audio dataset: Hub id or `save_to_disk` folder) are split on silences into pieces of at most `--max-piece-seconds`,
checked (no audio, only silence or under `--min-seconds` of speech: an error before any training; pieces that sound
like several speakers: a warning), tokenized with the base model's own tokenizers by prepare_dataset.py, and trained
by train.py (its loop, checkpoints, progress bar and Hub push) with a held-out share of the pieces and early stopping
on their loss. Flags this script does not know are passed on to train.py (e.g. `--per-device-batch-size 4`).

The output folder holds the adapter alone (a few MB, a model card naming the base; load it with
`SoundStormPipeline.from_pretrained(base, adapter=OUTPUT)` or `--adapter OUTPUT`), or with `--full` a whole model.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from datasets import Audio
from sklearn.cluster import KMeans

from ..audio import load_audio, prepare_waveform
from ..configuration_soundstorm import SoundStormConfig
from ..data import decode_audio, find_audio_column
from ..pipeline import BUNDLED_DEFAULT_MODEL, DEFAULT_MODEL_NAME, SoundStormPipeline
from ..tokenizers.base import local_folder, local_path_or_hub_id
from . import prepare, train
from .command_line import dashed, prefer_dashes

logger = logging.getLogger("finetune_voice")
FRAME_SECONDS = 0.025  # silence is found frame by frame
SILENCE_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS = 40.0, -60.0  # quieter than either is silence
MIN_GAP_SECONDS, PAD_SECONDS, MIN_PIECE_SECONDS = 0.3, 0.1, 1.0
SPEAKER_CHECK_PIECES, SPEAKER_CENTROID_SIMILARITY, SPEAKER_MINORITY_SHARE = 24, 0.85, 0.2


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]")


class UnusableAudio(ValueError):
    """The recordings cannot make a voice: reported as one line, before any training."""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument(*dashed("audio"), required=True, help="Folder of one speaker's recordings, or a datasets audio dataset (Hub id or save_to_disk folder).")
    parser.add_argument(*dashed("output"), required=True, help="Folder to write the adapter (or model) to. A run stopped before it finished continues there.")
    parser.add_argument("--overwrite", action="store_true", help="Train anew into an --output that holds a finished fine-tune (or an unfinished one).")
    parser.add_argument(*dashed("base"), default=DEFAULT_MODEL_NAME, help=f"Base model: '{DEFAULT_MODEL_NAME}' (the bundled one), a folder or a Hub id.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--lora", dest="full", action="store_false", help="Train a LoRA adapter (the default).")
    mode.add_argument("--full", action="store_true", help="Fine-tune every weight and save a whole model.")
    parser.set_defaults(full=False)
    parser.add_argument(*dashed("lora_rank"), type=int, default=16)
    parser.add_argument(*dashed("lora_target_modules"), default=None, help="Comma-separated module names (default: attention and feed-forward projections).")
    parser.add_argument(*dashed("dataset_config"), default=None, help="Configuration of a Hub dataset.")
    parser.add_argument(*dashed("split"), default="train", help="Split of a datasets source.")
    parser.add_argument(*dashed("min_seconds"), type=float, default=30.0, help="Least speech (silences left out) accepted.")
    parser.add_argument(*dashed("max_piece_seconds"), type=float, default=15.0, help="Longer recordings are split on silences into pieces up to this long.")
    parser.add_argument(*dashed("eval_share"), type=float, default=0.1, help="Share of the pieces held out (at least one).")
    parser.add_argument(*dashed("learning_rate"), type=float, default=None, help="Default: 5e-4 for LoRA, 5e-5 for --full.")
    parser.add_argument(*dashed("max_steps"), type=int, default=1000)
    parser.add_argument(*dashed("eval_steps"), type=int, default=25, help="Held-out loss every this many steps.")
    parser.add_argument(*dashed("early_stopping_patience"), type=int, default=4, help="Evaluations without a better held-out loss before stopping.")
    parser.add_argument(*dashed("seed"), type=int, default=0)
    parser.add_argument(*dashed("skip_speaker_check"), action="store_true", help="Do not compare the pieces' speaker embeddings.")
    parser.add_argument(*dashed("push_to_hub"), action="store_true")
    parser.add_argument(*dashed("hub_model_id"), default=None)
    parser.add_argument(*dashed("hub_private"), action="store_true")
    return prefer_dashes(parser)


# ---------------------------------------------------------------------------------------------------------------
# Recordings -> pieces


def looks_like_hub_id(name: str) -> bool:
    """`owner/dataset`, unless `owner` is a local folder (then `name` is a missing folder in it)."""
    return HUB_ID.fullmatch(name) is not None and not Path(name.split("/")[0]).is_dir()


def recordings(args):
    """`(name, mono float32 waveform, sampling rate)` for each recording; an unusable one (unreadable, empty, silent)
    is logged and comes with `None` for both, so that it only costs itself."""
    source = Path(args.audio).expanduser()
    if not source.exists() and not looks_like_hub_id(args.audio):
        raise UnusableAudio(f"--audio: no such folder: {args.audio}")
    saved_dataset = any((source / marker).is_file() for marker in ("state.json", "dataset_dict.json"))
    if source.is_dir() and not saved_dataset:
        extensions = {name.lower() for name in soundfile.available_formats()} | {"mp3", "aif", "oga", "opus"}
        files = sorted(path for path in source.rglob("*") if path.is_file() and path.suffix[1:].lower() in extensions)
        if not files:
            raise UnusableAudio(f"--audio: no audio files in {source} (looked for .{', .'.join(sorted(extensions))})")
        items = ((str(path), lambda path=path: load_audio(path)) for path in files)
    else:
        try:
            dataset = prepare.load_audio_dataset(args.audio, args.dataset_config, args.split, False)
        except Exception as error:  # offline, no such dataset, no access: named in one line
            kind = "saved dataset" if source.exists() else "local folder nor a Hub dataset that can be loaded"
            raise UnusableAudio(f"--audio: {args.audio} is no {kind}: {str(error).splitlines()[0]}") from None
        column = find_audio_column(dataset)
        dataset = dataset.cast_column(column, Audio(decode=False))
        items = ((f"{args.audio}[{index}]", lambda row=row: decode_audio(row[column])) for index, row in enumerate(dataset))
    for name, read in items:
        try:
            waveform, rate = read()
            yield name, prepare_waveform(waveform, rate).numpy(), rate
        except Exception as error:  # unreadable, empty, silent, too many channels: this recording only
            logger.warning("skipped %s: %s", name, str(error).splitlines()[0] if str(error) else type(error).__name__)
            yield name, None, None


def speech_frames(waveform: np.ndarray, rate: int) -> np.ndarray:
    """Whether each `FRAME_SECONDS` frame holds sound: louder than -40 dB under the loudest frame and than -60 dBFS."""
    frame = max(1, round(FRAME_SECONDS * rate))
    count = len(waveform) // frame
    if count == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(waveform[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1))
    threshold = max(rms.max() * 10 ** (-SILENCE_BELOW_PEAK_DB / 20), 10 ** (SILENCE_FLOOR_DBFS / 20))
    return rms > threshold


def split_on_silences(waveform: np.ndarray, rate: int, max_seconds: float) -> list[tuple[np.ndarray, float]]:
    """Pieces `(samples, seconds of speech in them)` of at most `max_seconds`, cut in the middle of silences.

    Sounding stretches closer than `MIN_GAP_SECONDS` are one stretch; stretches are packed into pieces in order, and
    a stretch longer than `max_seconds` (no pause to cut at) is cut evenly. Pieces shorter than a second are left out.
    """
    loud = speech_frames(waveform, rate)
    frame = max(1, round(FRAME_SECONDS * rate))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    stretches, gap = [], round(MIN_GAP_SECONDS / FRAME_SECONDS)
    for start, end in zip(edges[::2], edges[1::2]):
        if stretches and start - stretches[-1][1] < gap:
            stretches[-1][1] = end
        else:
            stretches.append([start, end])
    longest = max(1, round(max_seconds / FRAME_SECONDS) - 2 * round(PAD_SECONDS / FRAME_SECONDS))
    cut = [[a, min(a + longest, end)] for start, end in stretches for a in range(start, end, longest)]
    groups = []
    for start, end in cut:
        if groups and end - groups[-1][0][0] <= longest:
            groups[-1].append((start, end))
        else:
            groups.append([(start, end)])
    pad = round(PAD_SECONDS * rate)
    pieces = []
    for group in groups:
        first, last = group[0][0] * frame - pad, group[-1][1] * frame + pad
        piece = waveform[max(0, first) : last]
        if len(piece) >= MIN_PIECE_SECONDS * rate:
            pieces.append((piece, sum(loud[start:end].sum() for start, end in group) * FRAME_SECONDS))
    return pieces


def write_pieces(args, folder: Path) -> list[Path]:
    """Split every recording into pieces written to `folder` (an audiofolder), refusing input that cannot make a voice."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, speech, recordings_seen, unusable = [], 0.0, 0, 0
    for name, waveform, rate in recordings(args):
        recordings_seen += 1
        if waveform is None:
            unusable += 1
            continue
        for piece, seconds in split_on_silences(waveform, rate, args.max_piece_seconds):
            paths.append(folder / f"piece-{len(paths):05d}.wav")
            soundfile.write(paths[-1], piece, rate, subtype="FLOAT")
            speech += seconds
    if recordings_seen == unusable:
        raise UnusableAudio(f"--audio: none of the {recordings_seen} recordings in {args.audio} is usable (silent, empty or unreadable)")
    if speech < args.min_seconds:
        raise UnusableAudio(
            f"--audio: only {speech:.1f} s of speech in {recordings_seen} recordings ({unusable} unusable), at least "
            f"{args.min_seconds:g} s are needed (silences do not count)"
        )
    logger.info("%d recordings (%d unusable) -> %d pieces, %.1f s of speech", recordings_seen, unusable, len(paths), speech)
    return paths


def check_one_speaker(paths: list[Path]) -> str | None:
    """A warning (also logged) when the pieces' Resemblyzer embeddings fall in two distinct groups: several speakers
    mixed, which fine-tuning would blend into one voice. None when they do not, or when Resemblyzer is missing."""
    from soundstorm_hf.evaluation import cosine_similarity, speaker_embedding

    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, min(len(paths), SPEAKER_CHECK_PIECES)).round().astype(int)]
    try:
        embeddings = np.stack([speaker_embedding(*soundfile.read(path, dtype="float32")) for path in dict.fromkeys(chosen)])
    except ImportError as error:
        logger.info("Speaker check skipped (%s)", error)
        return None
    if len(embeddings) < 4:
        return None
    labels = KMeans(2, n_init=4, random_state=0).fit_predict(embeddings)
    minority = min(np.bincount(labels, minlength=2))
    similarity = cosine_similarity(*(embeddings[labels == label].mean(0) for label in (0, 1)))
    if minority >= max(2, SPEAKER_MINORITY_SHARE * len(labels)) and similarity < SPEAKER_CENTROID_SIMILARITY:
        message = (
            f"The recordings seem to hold several speakers: {minority} of {len(labels)} pieces checked form a group "
            f"whose voice differs from the rest (speaker-embedding similarity {similarity:.2f}); fine-tuning would "
            "blend them. Give one speaker's recordings only."
        )
        logger.warning("%s", message)
        return message
    return None


# ---------------------------------------------------------------------------------------------------------------


def resolve_base(name: str) -> tuple[str, str, str]:
    """The base model's location and its codec and semantic tokenizer sources; refuses a base whose tokenizers are
    missing (the pipeline loader names what is missing) or do not match it."""
    base = str(BUNDLED_DEFAULT_MODEL) if name == DEFAULT_MODEL_NAME and not Path(name).exists() else name
    try:
        SoundStormPipeline.from_pretrained(base)  # every check of a loadable, complete model folder
    except (OSError, ValueError) as error:
        raise UnusableAudio(f"--base: {str(error).splitlines()[0]}") from None
    config = SoundStormConfig.from_pretrained(base)
    folder = local_path_or_hub_id(base, "base") or local_folder(base)

    def source(recorded: str) -> str:
        return str(folder / recorded) if (folder / recorded).is_dir() else recorded

    return base, source(config.codec_name_or_path), source(config.semantic_tokenizer_name_or_path)


def train_arguments(args, base: str, tokens: Path, num_pieces: int, extra: list[str]) -> list[str]:
    """train.py's command line for this fine-tuning (windows of the base's `max_frames`); flags in `extra` come last
    and win."""
    learning_rate = args.learning_rate or (5e-5 if args.full else 5e-4)
    argv = [
        "--model-name-or-path", base, "--dataset-name", str(tokens), "--output-dir", args.output,
        "--eval-split-size", str(max(1, round(args.eval_share * num_pieces))),
        "--max-frames", str(SoundStormConfig.from_pretrained(base).max_frames), "--learning-rate", str(learning_rate),
        "--max-steps", str(args.max_steps), "--warmup-steps", str(min(50, args.max_steps // 10)),
        "--lr-scheduler-type", "constant_with_warmup", "--eval-steps", str(args.eval_steps),
        "--save-steps", str(args.eval_steps), "--logging-steps", str(args.eval_steps),
        "--early-stopping-patience", str(args.early_stopping_patience), "--num-audio-samples", "1",
        "--prompt-seconds", "1.0", "--save-total-limit", "1", "--seed", str(args.seed), "--report-to", "none",
    ]
    if not args.full:
        argv += ["--lora-rank", str(args.lora_rank)]
        if args.lora_target_modules:
            argv += ["--lora-target-modules", args.lora_target_modules]
    if args.push_to_hub:
        argv += ["--push-to-hub", "True", "--hub-model-id", args.hub_model_id, *(["--hub-private", "True"] if args.hub_private else [])]
    return argv + extra


def resume_or_start(args) -> list[str]:
    """train.py's flags for `--output`: continue a run stopped there, start anew with `--overwrite`; a finished
    fine-tune there is refused without `--overwrite` (it would be trained over)."""
    output = Path(args.output)
    finished = [name for name in (train.RESULTS_NAME, "adapter_model.safetensors", "model.safetensors") if (output / name).exists()]
    if args.overwrite:
        shutil.rmtree(train.checkpoint_root(train.TrainingArguments(output_dir=args.output)), ignore_errors=True)
        return []
    if finished:
        raise UnusableAudio(
            f"--output: {output} already holds a finished fine-tune ({finished[0]}): pass --overwrite to train a new "
            "one there, or choose another folder"
        )
    return ["--resume-from-checkpoint", "latest"]  # nothing to resume: a fresh start


def main(args, extra: list[str] = ()) -> dict[str, float]:
    """Pieces, checks, tokens, training; returns train.py's final held-out metrics."""
    if args.push_to_hub and not args.hub_model_id:
        raise UnusableAudio("--push-to-hub needs --hub-model-id")
    resume = resume_or_start(args)
    base, codec, semantic = resolve_base(args.base)
    with tempfile.TemporaryDirectory(prefix="soundstorm-voice-") as work:
        pieces = write_pieces(args, Path(work) / "pieces")
        if not args.skip_speaker_check:
            check_one_speaker(pieces)
        tokens = Path(work) / "tokens"
        prepare.main(prepare.PrepareArguments(
            dataset_name=str(Path(work) / "pieces"), output_dir=str(tokens), codec=codec, semantic_tokenizer=semantic,
            min_duration=MIN_PIECE_SECONDS / 2, batch_size=8,
        ))
        argv = train_arguments(args, base, tokens, len(pieces), [*resume, *extra])
        return train.main(*train.parse_arguments(argv))


def stop_on_sigterm(number, frame) -> None:
    """Outside the training steps (which save a checkpoint first), SIGTERM stops at once; temporary files go."""
    raise train.RunStopped(f"Stopped by {signal.Signals(number).name} outside the training steps; the same command "
                           "continues from the last checkpoint, if there is one.", 128 + number)


def cli(argv: list[str], prog: str | None = None) -> None:
    """Unusable input or base is one line on stderr and exit status 1; SIGTERM or Ctrl-C one line and 143 or 130 (the
    run continues from its checkpoint when started again); anything else keeps its traceback."""
    parser = build_parser(prog)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        main(args, extra)
    except UnusableAudio as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except train.RunStopped as stop:
        print(f"{parser.prog}: {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted outside the training steps", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    cli(sys.argv[1:])
