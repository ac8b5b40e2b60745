"""Turn an audio dataset into a SoundStorm token dataset: semantic ids + acoustic codes + metadata.

    soundstorm-hf prepare --dataset-name mythicinfinity/libritts_r --dataset-config clean \
        --split train.clean.100 --codec descript/dac_16khz --semantic-tokenizer <tokenizer> --output-dir tokens/
    accelerate launch -m soundstorm_hf.training.prepare ...      # one shard at a time per process, GPU when present

The work is cut into shards of `--shard-size` rows; each shard is tokenized and written on its own (to a temporary
folder, then renamed), so a re-run skips the shards already written and continues where the last one stopped.
`shards/manifest.json` records the arguments that decide what goes into a shard; a re-run with other ones is refused.
Once every shard is there, they are joined into `output_dir` (`datasets.load_from_disk(output_dir)`), next to
`soundstorm_tokens.json` (tokenizers, token grid, frame rates, what was dropped) that train.py checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from accelerate import PartialState
from datasets import Audio, Dataset, IterableDataset
from huggingface_hub import HfApi
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from ..audio import prepare_waveform
from ..data import (
    TOKENS_INFO_NAME,
    DROP_REASONS,
    AudioTokenizer,
    TokenDatasetInfo,
    check_waveform,
    decode_audio,
    find_audio_column,
    find_metadata_columns,
    token_features,
)
from ..pipeline import CODEC_SUBFOLDER, SEMANTIC_SUBFOLDER
from ..tokenizers import (
    OfflineMelCodec,
    OfflineMfccTokenizer,
    load_acoustic_codec,
    load_semantic_tokenizer,
)
from .command_line import prefer_dashes

logger = logging.getLogger("prepare_dataset")
SHARDS_FOLDER = "shards"
REPORT_NAME, MANIFEST_NAME = "report.json", "manifest.json"
# The arguments that decide which rows land in which shard and which tokens they get: every shard must share them.
SHARD_SETTINGS = (
    "dataset_name", "dataset_config", "split", "max_examples", "audio_column", "text_column", "speaker_column",
    "min_duration", "shard_size", "codec", "semantic_tokenizer", "fit_tokenizers",
)
FIT_SETTINGS = ("fit_num_examples", "codec_num_levels", "codec_codebook_size", "semantic_num_clusters", "seed")


@dataclass
class PrepareArguments:
    dataset_name: str = field(metadata={"help": "Hub dataset id, a local audiofolder, or a folder from save_to_disk."})
    output_dir: str = field(metadata={"help": "Where the token dataset (and fitted tokenizers) are written."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    split: str = field(default="train")
    streaming: bool = field(default=False, metadata={"help": "Stream the source instead of downloading it first."})
    audio_column: str | None = field(default=None, metadata={"help": "Default: the dataset's one Audio column."})
    text_column: str | None = field(default=None, metadata={"help": "Default: text_normalized, text, sentence, ..."})
    speaker_column: str | None = field(default=None, metadata={"help": "Default: speaker_id, speaker, client_id."})
    max_examples: int | None = field(default=None, metadata={"help": "Only tokenize the first rows (trial runs)."})
    codec: str | None = field(default=None, metadata={"help": "Acoustic codec: Hub id or folder."})
    semantic_tokenizer: str | None = field(default=None, metadata={"help": "Semantic tokenizer: Hub id or folder."})
    fit_tokenizers: bool = field(
        default=False,
        metadata={"help": "Fit the offline k-means codec and semantic tokenizer on the first rows of the dataset "
                  "(saved in output_dir/codec and output_dir/semantic_tokenizer) instead of loading them."},
    )
    fit_num_examples: int = field(default=500, metadata={"help": "Rows used to fit the offline tokenizers."})
    codec_num_levels: int = field(default=8)
    codec_codebook_size: int = field(default=256)
    semantic_num_clusters: int = field(default=256)
    min_duration: float = field(default=0.5, metadata={"help": "Rows shorter than this (seconds) are dropped."})
    batch_size: int = field(default=16, metadata={"help": "Rows encoded together."})
    shard_size: int = field(default=1000, metadata={"help": "Rows per shard: the unit of work and of resumption."})
    seed: int = field(default=0)
    push_to_hub: bool = field(default=False)
    hub_dataset_id: str | None = field(default=None)
    private: bool = field(default=False)


def load_audio_dataset(name: str, config: str | None, split: str, streaming: bool) -> Dataset | IterableDataset:
    """A dataset saved with `save_to_disk`, a local audiofolder (audio files + optional metadata.csv), or a Hub id."""
    path = Path(name)
    if path.is_dir() and any((path / marker).is_file() for marker in ("state.json", "dataset_dict.json")):
        dataset = datasets.load_from_disk(name)
        dataset = dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
        return dataset.to_iterable_dataset() if streaming else dataset
    if path.is_dir():
        return datasets.load_dataset("audiofolder", data_dir=name, split=split, streaming=streaming)
    return datasets.load_dataset(name, config, split=split, streaming=streaming)


def usable_waveforms(dataset, audio_column: str, sampling_rate: int, limit: int, min_duration: float):
    """The first `limit` usable rows of `dataset` as mono waveforms at `sampling_rate` (to fit tokenizers on)."""
    taken = 0
    for row in dataset:
        if taken == limit:
            return
        try:
            waveform, rate = decode_audio(row[audio_column])
        except Exception:
            continue
        if not check_waveform(waveform, rate, min_duration):
            taken += 1
            yield prepare_waveform(waveform, rate, sampling_rate)


def get_tokenizers(args: PrepareArguments, dataset, audio_column: str, state: PartialState):
    """Load the codec and semantic tokenizer, or fit the offline ones first (once, on the main process).

    Returns (codec, semantic tokenizer, codec name, semantic name) where names are what gets recorded.
    """
    output_dir = Path(args.output_dir)
    if not args.fit_tokenizers:
        codec_name, semantic_name = args.codec, args.semantic_tokenizer
    else:
        codec_name, semantic_name = CODEC_SUBFOLDER, SEMANTIC_SUBFOLDER
        with state.main_process_first():
            if state.is_main_process and not (output_dir / CODEC_SUBFOLDER).is_dir():
                fit_offline_tokenizers(args, dataset, audio_column)
    codec = load_acoustic_codec(_local_or_hub(output_dir, codec_name)).to(state.device).eval()
    semantic = load_semantic_tokenizer(_local_or_hub(output_dir, semantic_name)).to(state.device).eval()
    return codec, semantic, codec_name, semantic_name


def _local_or_hub(output_dir: Path, name: str) -> str:
    return str(output_dir / name) if (output_dir / name).is_dir() else name


def fit_offline_tokenizers(args: PrepareArguments, dataset, audio_column: str) -> None:
    """Fit the k-means of the offline semantic tokenizer and codec on the first usable rows; save both."""
    output_dir = Path(args.output_dir)
    semantic, codec = OfflineMfccTokenizer(), OfflineMelCodec()
    limit = args.fit_num_examples if isinstance(dataset, IterableDataset) else min(args.fit_num_examples, len(dataset))

    def fit(tokenizer, **kwargs):
        rows = usable_waveforms(dataset, audio_column, tokenizer.sampling_rate, limit, args.min_duration)
        with tqdm(rows, total=limit, desc=f"Fitting {type(tokenizer).__name__}", unit="row") as progress:
            tokenizer.fit(progress, seed=args.seed, **kwargs)
        logger.info("Fitted %s on %d rows", type(tokenizer).__name__, progress.n)  # bad rows and max_frames cut it

    fit(semantic, num_clusters=args.semantic_num_clusters)
    fit(codec, num_levels=args.codec_num_levels, codebook_size=args.codec_codebook_size)
    semantic.save_pretrained(output_dir / SEMANTIC_SUBFOLDER)
    codec.save_pretrained(output_dir / CODEC_SUBFOLDER)  # written last: its presence means both are fitted


def shard_rows(dataset: Dataset | IterableDataset, index: int, size: int) -> IterableDataset:
    """Rows `[index * size, (index + 1) * size)` as an iterable dataset (streamed sources are skipped through)."""
    if isinstance(dataset, Dataset):
        stop = min(len(dataset), (index + 1) * size)
        return dataset.select(range(index * size, stop)).to_iterable_dataset()
    return dataset.skip(index * size).take(size)


def tokenize_shard(rows: IterableDataset, tokenizer: AudioTokenizer, features, batch_size: int):
    """Tokenize a shard; return (kept rows as a `Dataset`, report with rows in/out and drop counts)."""
    tokenized = rows.map(tokenizer, batched=True, batch_size=batch_size, remove_columns=rows.column_names)
    table = list(tokenized)
    reasons = Counter(row.pop("drop_reason") for row in table)
    kept = [row for row in table if row["num_frames"] > 0]
    report = dict(
        rows_in=len(table),
        rows_out=len(kept),
        dropped={reason: reasons[reason] for reason in DROP_REASONS if reasons[reason]},
        hours=sum(row["duration"] for row in kept) / 3600,
    )
    columns = {name: [row[name] for row in kept] for name in features}  # from_list loses the schema when empty
    return Dataset.from_dict(columns, features=features), report


def check_arguments(args: PrepareArguments) -> None:
    """Refuse, before any work, arguments that cannot work (the command line turns this into a usage error)."""
    if not args.fit_tokenizers and (args.codec is None or args.semantic_tokenizer is None):
        raise argparse.ArgumentError(None, "give --codec and --semantic-tokenizer, or --fit-tokenizers to fit offline ones")
    if args.push_to_hub and not args.hub_dataset_id:
        raise argparse.ArgumentError(None, "--push-to-hub needs --hub-dataset-id")


def record_shard_settings(shards_dir: Path, args: PrepareArguments) -> None:
    """Write `shards/manifest.json` (atomically), or refuse to add shards made with other `SHARD_SETTINGS`.

    Shards are cut by row index and tokenized by the tokenizers in use, so shards made with another shard size,
    source or tokenizers would silently lose, duplicate or mix rows in the joined dataset.
    """
    settings = {name: getattr(args, name) for name in SHARD_SETTINGS + (FIT_SETTINGS if args.fit_tokenizers else ())}
    manifest = shards_dir / MANIFEST_NAME
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        differences = [
            f"{name}: {recorded.get(name)!r} then, {settings.get(name)!r} now"
            for name in sorted(set(recorded) | set(settings)) if recorded.get(name) != settings.get(name)
        ]
        if differences:
            raise argparse.ArgumentError(None, (
                f"{shards_dir} holds shards made with other arguments ({'; '.join(differences)}): re-run with the "
                f"same ones, or delete {shards_dir} to start over"
            ))
        return
    shards_dir.mkdir(parents=True, exist_ok=True)
    temporary = shards_dir / f"tmp-{MANIFEST_NAME}"
    temporary.write_text(json.dumps(settings, indent=2) + "\n")
    temporary.replace(manifest)


class NoUsableRows(ValueError):
    """Every source row was dropped: the data, not the arguments, is at fault (the report counts why)."""


def main(args: PrepareArguments) -> None:
    check_arguments(args)
    state = PartialState()
    logging.basicConfig(level=logging.INFO if state.is_main_process else logging.WARNING, format="%(message)s")
    output_dir = Path(args.output_dir)
    shards_dir = output_dir / SHARDS_FOLDER
    if (output_dir / "state.json").is_file() and (output_dir / TOKENS_INFO_NAME).is_file():
        logger.info("%s already holds a finished token dataset; nothing to do.", output_dir)
        return finish(args, output_dir, state)
    with state.main_process_first():
        record_shard_settings(shards_dir, args)

    dataset = load_audio_dataset(args.dataset_name, args.dataset_config, args.split, args.streaming)
    if args.max_examples is not None:
        dataset = dataset.take(args.max_examples) if args.streaming else dataset.select(range(min(args.max_examples, len(dataset))))
    audio_column = find_audio_column(dataset, args.audio_column)
    metadata = find_metadata_columns(dataset, text=args.text_column, speaker_id=args.speaker_column)
    dataset = dataset.cast_column(audio_column, Audio(decode=False))  # decoded row by row, see data.decode_audio
    codec, semantic, codec_name, semantic_name = get_tokenizers(args, dataset, audio_column, state)
    tokenizer = AudioTokenizer(codec, semantic, audio_column, metadata, args.min_duration)
    features = token_features(codec.num_levels, codec.codebook_size, semantic.vocab_size, list(metadata))

    # Shard k goes to process k mod num_processes; a streamed source ends at its first empty shard.
    num_shards = None if args.streaming else -(-len(dataset) // args.shard_size)
    index = state.process_index
    while num_shards is None or index < num_shards:
        shard_dir = shards_dir / f"shard-{index:05d}"
        if (shard_dir / REPORT_NAME).is_file():
            logger.info("shard %d: already written, skipped", index)
        else:
            kept, report = tokenize_shard(shard_rows(dataset, index, args.shard_size), tokenizer, features, args.batch_size)
            if report["rows_in"] == 0:
                break
            temporary = shards_dir / f"tmp-{shard_dir.name}"
            shutil.rmtree(temporary, ignore_errors=True)
            if report["rows_out"]:
                kept.save_to_disk(str(temporary))
            else:  # every row dropped: the report alone (datasets writes no arrow file for no rows, then cannot load it)
                temporary.mkdir(parents=True)
            (temporary / REPORT_NAME).write_text(json.dumps(report) + "\n")
            temporary.rename(shard_dir)
            logger.warning("shard %d: %d rows in, %d kept, dropped %s", index, report["rows_in"], report["rows_out"], report["dropped"])
        index += state.num_processes
    state.wait_for_everyone()

    if state.is_main_process:
        shard_dirs = sorted(shards_dir.glob("shard-*"))
        reports = [json.loads((shard / REPORT_NAME).read_text()) for shard in shard_dirs]
        dropped = Counter()
        for report in reports:
            dropped.update(report["dropped"])
        rows_in = sum(report["rows_in"] for report in reports)
        parts = [datasets.load_from_disk(str(shard)) for shard, report in zip(shard_dirs, reports) if report["rows_out"]]
        if not parts:
            raise NoUsableRows(f"All {rows_in} rows were dropped ({dict(dropped)}): there is no token dataset to write.")
        tokens = datasets.concatenate_datasets(parts)
        tokens.save_to_disk(str(output_dir))
        info = TokenDatasetInfo.from_tokenizers(
            codec, semantic, codec_name, semantic_name,
            source=dict(name=args.dataset_name, config=args.dataset_config, split=args.split),
            num_rows=len(tokens),
            hours=round(sum(report["hours"] for report in reports), 4),
            dropped=dict(dropped),
        )
        info.save(output_dir)  # written last: its presence means the dataset is complete
        shutil.rmtree(shards_dir)
        logger.info("Token dataset: %d of %d rows kept (%.2f h), dropped %s -> %s", len(tokens), rows_in, info.hours, dict(dropped), output_dir)
    state.wait_for_everyone()
    finish(args, output_dir, state)


def finish(args: PrepareArguments, output_dir: Path, state: PartialState) -> None:
    if args.push_to_hub and state.is_main_process:
        push_token_dataset(output_dir, args.hub_dataset_id, args.private)


def push_token_dataset(output_dir: Path, repo_id: str, private: bool = False) -> None:
    """Push the token rows (parquet) and, beside them, the tokens json and any tokenizers saved in the dataset."""
    datasets.load_from_disk(str(output_dir)).push_to_hub(repo_id, private=private)
    HfApi().upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(output_dir),
        allow_patterns=[TOKENS_INFO_NAME, f"{CODEC_SUBFOLDER}/*", f"{SEMANTIC_SUBFOLDER}/*"],
        commit_message="Add SoundStorm token info and tokenizers",
    )


def cli(argv: list[str] | None = None, prog: str | None = None) -> None:
    """The command line: arguments that cannot work end in a usage error (exit 2), a source without one usable row
    in a one-line error (exit 1); neither prints a traceback."""
    parser = prefer_dashes(HfArgumentParser(PrepareArguments, prog=prog, description=__doc__.split("\n\n")[0]))
    args = parser.parse_args_into_dataclasses(argv)[0]
    try:
        main(args)
    except argparse.ArgumentError as error:
        parser.error(str(error))
    except NoUsableRows as error:
        raise SystemExit(f"{parser.prog}: error: {error}") from None


if __name__ == "__main__":
    cli(sys.argv[1:])
