"""Pack a token dataset (from `prepare_dataset.py`) into compact files for a GPU call, and unpack it there.

    python training/pack_token_dataset.py pack tokens_train packed_train --hours_per_file 4
    python training/pack_token_dataset.py unpack packed_train tokens_train     # on the GPU machine

A GPU call carries at most 64 MiB, this repository included; the arrow columns of a token dataset take 16 bits per
code, the packed files (`soundstorm_hf.token_packing`) about 9.4. `pack` writes `tokens-00000.npz`, ... of at most
`--hours_per_file` hours each (so a call can take as many as fit) and copies the tokenizer folders recorded in
`soundstorm_tokens.json` beside them; `unpack` reads every `tokens-*.npz` of a folder back into a token dataset that
`train.py` loads as it is, rows in the same order, with the same `soundstorm_tokens.json`. Tokenizers that already
travel with the repository (the default model's take 10 MiB) need not travel twice: `pack --without_tokenizers`,
then `unpack --tokenizers_dir src/soundstorm_hf/default` copies them from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from soundstorm_hf.data import TOKEN_COLUMNS, TokenDatasetInfo, token_features
from soundstorm_hf.token_packing import pack_tokens, unpack_tokens

NUMERIC_COLUMNS = (*TOKEN_COLUMNS, "num_frames", "duration")


def tokenizer_folders(info: TokenDatasetInfo, directory: Path) -> list[str]:
    """The tokenizers saved inside the token dataset's folder (recorded by relative name)."""
    names = (info.codec_name_or_path, info.semantic_tokenizer_name_or_path)
    return [name for name in names if (directory / name).is_dir()]


def pack(tokens_dir: Path, packed_dir: Path, hours_per_file: float, with_tokenizers: bool = True) -> None:
    info = TokenDatasetInfo.load(tokens_dir)
    dataset = datasets.load_from_disk(str(tokens_dir)).with_format("numpy")
    metadata_columns = [name for name in dataset.column_names if name not in NUMERIC_COLUMNS]
    packed_dir.mkdir(parents=True, exist_ok=True)
    for stale in packed_dir.glob("tokens-*.npz"):  # a folder holds one packed dataset, not a mix of two
        stale.unlink()
    files, batch, seconds, total_bytes = 0, [], 0.0, 0

    def flush() -> None:
        nonlocal files, batch, seconds, total_bytes
        rows = dataset[batch]  # columns of the selected rows
        total_bytes += pack_tokens(
            packed_dir / f"tokens-{files:05d}.npz",
            [np.stack(list(codes)) for codes in rows["acoustic_ids"]],  # (levels, frames) each
            list(rows["semantic_ids"]),
            metadata={"duration": [repr(float(value)) for value in rows["duration"]],  # exact, not frames / rate
                      **{name: list(rows[name]) for name in metadata_columns}},
        )
        files, batch, seconds = files + 1, [], 0.0

    durations = dataset["duration"]
    for index in tqdm(range(len(dataset)), desc="packing", unit="row"):
        batch.append(index)
        seconds += float(durations[index])
        if seconds >= hours_per_file * 3600:
            flush()
    if batch:
        flush()
    for name in tokenizer_folders(info, tokens_dir) if with_tokenizers else []:
        shutil.rmtree(packed_dir / name, ignore_errors=True)
        shutil.copytree(tokens_dir / name, packed_dir / name)
    info.save(packed_dir)
    print(f"{len(dataset)} rows ({info.hours} h) -> {files} files, {total_bytes / 2**20:.1f} MiB in {packed_dir}")


def unpack(packed_dir: Path, tokens_dir: Path, tokenizers_dir: Path | None = None) -> None:
    info = TokenDatasetInfo.load(packed_dir)
    paths = sorted(packed_dir.glob("tokens-*.npz"))
    if not paths:
        raise SystemExit(f"{packed_dir} holds no tokens-*.npz files")
    sources = [packed_dir] + ([tokenizers_dir] if tokenizers_dir else [])
    names = (info.codec_name_or_path, info.semantic_tokenizer_name_or_path)
    tokenizers = {name: next((source / name for source in sources if (source / name).is_dir()), None) for name in names}
    for name in (name for name, folder in tokenizers.items() if folder is None):
        print(f"tokenizer {name!r} is in none of {[str(source) for source in sources]}: kept as recorded (a Hub id?)")
    columns: dict[str, list] = {name: [] for name in NUMERIC_COLUMNS}
    for path in tqdm(paths, desc="unpacking", unit="file"):
        packed = unpack_tokens(path)
        columns["acoustic_ids"] += [codes.tolist() for codes in packed.acoustic_ids]
        columns["semantic_ids"] += [ids.tolist() for ids in packed.semantic_ids]
        columns["num_frames"] += [codes.shape[1] for codes in packed.acoustic_ids]
        for name, values in packed.metadata.items():
            columns.setdefault(name, []).extend(values)
    columns["duration"] = [float(value) for value in columns["duration"]]
    metadata = [name for name in columns if name not in NUMERIC_COLUMNS]
    features = token_features(info.num_levels, info.codebook_size, info.semantic_vocab_size, metadata)
    dataset = datasets.Dataset.from_dict(columns, features=features)
    dataset.save_to_disk(str(tokens_dir))
    for name, folder in tokenizers.items():
        if folder is not None:
            shutil.rmtree(tokens_dir / name, ignore_errors=True)
            shutil.copytree(folder, tokens_dir / name)
    dataclasses.replace(info, num_rows=len(dataset)).save(tokens_dir)  # written last: the dataset is complete
    print(f"{len(paths)} files -> {len(dataset)} rows in {tokens_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="token dataset folder -> folder of packed files")
    pack_parser.add_argument("tokens_dir", type=Path)
    pack_parser.add_argument("packed_dir", type=Path)
    pack_parser.add_argument("--hours_per_file", type=float, default=4.0)
    pack_parser.add_argument("--without_tokenizers", action="store_true",
                             help="leave the tokenizer folders out (they travel otherwise, e.g. in the repository)")
    unpack_parser = commands.add_parser("unpack", help="folder of packed files -> token dataset folder")
    unpack_parser.add_argument("packed_dir", type=Path)
    unpack_parser.add_argument("tokens_dir", type=Path)
    unpack_parser.add_argument("--tokenizers_dir", type=Path, default=None,
                               help="where tokenizer folders missing beside the packed files are, by the same names")
    args = parser.parse_args(argv)
    if args.command == "pack":
        if args.hours_per_file <= 0:
            parser.error("--hours_per_file must be positive")
        pack(args.tokens_dir, args.packed_dir, args.hours_per_file, not args.without_tokenizers)
    else:
        unpack(args.packed_dir, args.tokens_dir, args.tokenizers_dir)


if __name__ == "__main__":
    main()
