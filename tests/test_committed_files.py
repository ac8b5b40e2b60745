"""Committed results and model cards name no folder of the machine they were made on: a reader cannot follow
`/work/data/corpus`, and a path under a home folder gives away a user name. Paths are relative to the repository."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = [
    "benchmarks/results",
    "src/soundstorm_hf/default",
    "src/soundstorm_hf/examples/README.md",
    "src/soundstorm_hf/training/model_card.md",
    "training/README.md",
]
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users|mnt|scratch)/[^\s\"'`),]*")


def machine_paths(text: str) -> list[str]:
    return MACHINE_PATH.findall(text)


def test_machine_paths_are_recognised():
    assert machine_paths('"corpus": "/work/data/corpus", --out /root/out/x.json, `/home/ann/a.wav`') == [
        "/work/data/corpus",
        "/root/out/x.json",
        "/home/ann/a.wav",
    ]
    assert machine_paths("data/corpus, results_gpu/x.json, /usr/share/doc/asterisk, src/soundstorm_hf/work/x") == []


def test_committed_results_and_model_cards_hold_no_machine_paths():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--", *CHECKED], cwd=ROOT, capture_output=True, check=True)
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    assert len(files) > 10, "the committed results were not found"
    found = {}
    for path in files:
        data = path.read_bytes()
        if b"\0" in data:  # weights, audio
            continue
        if hits := machine_paths(data.decode("utf-8", errors="replace")):
            found[str(path.relative_to(ROOT))] = sorted(set(hits))
    assert not found, f"machine-specific paths in committed files: {found}"
