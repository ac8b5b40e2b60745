"""The package works installed from a wheel, outside a source checkout: the training commands find their code in it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (seeing the system's torch and friends) holding the package from a wheel built off a copy of the
    sources: its `bin/` folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=120,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    venv = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], capture_output=True, text=True)
    if venv.returncode != 0:
        pytest.skip(f"cannot create a venv here: {venv.stderr.strip().splitlines()[-1:]}")
    bin_folder = work / "venv" / "bin"
    wheel = next((work / "dist").glob("soundstorm_hf-*.whl"))
    install = subprocess.run([bin_folder / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr[-3000:]
    return bin_folder


def environment() -> dict:
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # nothing from the checkout


def test_the_wheel_shadows_the_checkout(installed):
    where = subprocess.run([installed / "python", "-c", "import soundstorm_hf; print(soundstorm_hf.__file__)"],
                           capture_output=True, text=True, env=environment(), cwd=installed, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout


def test_training_commands_run_from_the_wheel(installed):
    commands = ("train", "prepare", "finetune")
    running = {  # side by side: each start-up imports torch
        command: subprocess.Popen([installed / "soundstorm-hf", command, "--help"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=environment(), cwd=installed)
        for command in commands
    }
    for command, process in running.items():
        shown, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors[-3000:]
        assert shown.startswith(f"usage: soundstorm-hf {command} "), shown[:300]
