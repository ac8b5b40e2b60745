"""A self-contained Hugging Face Space folder for the demo.

A Space installs what its `requirements.txt` names from package indexes, and soundstorm-hf is on none: so the folder
carries the package as a wheel, and `requirements.txt` points at that file. Everything else a Space reads is here
too: the entry point (`app.py`), the front matter naming the model (`README.md`), the model to serve
(`space.json`, overridden by the `SOUNDSTORM_MODEL` variable) and the Debian packages of the text front end
(`packages.txt`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from ..pipeline import DEFAULT_MODEL_NAME

TEMPLATE = Path(__file__).parent / "template"
SETTINGS_FILE = "space.json"  # {"model": a Hub id or DEFAULT_MODEL_NAME}, read by app.py
DISTRIBUTION = "soundstorm-hf"


def source_tree() -> Path | None:
    """The source checkout this package runs from, if it does (an installed wheel has none)."""
    root = TEMPLATE.parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def build_wheel(into: Path) -> Path:
    """Builds this package's wheel from its source checkout into `into`."""
    root = source_tree()
    if root is None:
        raise FileNotFoundError(
            "this soundstorm-hf is installed without its source: pass the package's wheel (--wheel FILE)"
        )
    with tempfile.TemporaryDirectory(dir=into) as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", scratch, str(root)],
            check=True,
            capture_output=True,
        )
        (built,) = Path(scratch).glob("*.whl")
        return Path(shutil.move(str(built), into / built.name))


def assemble_space(folder: str | Path, model: str = DEFAULT_MODEL_NAME, wheel: str | Path | None = None) -> Path:
    """Writes a Space folder serving `model` (a Hub id, or "default" for the bundled one) into `folder`.

    `folder` must be new or empty; it is filled under a temporary name beside it and renamed when complete, so an
    interrupted call leaves nothing half-written. `wheel` is the package's wheel (built from the source checkout
    when not given).
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists and is not an empty folder")
    if wheel is not None and not Path(wheel).is_file():
        raise FileNotFoundError(f"wheel not found: {wheel}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the folder from a web server or another user
    try:
        wheel = Path(shutil.copy2(wheel, staging)) if wheel is not None else build_wheel(staging)
        for name in ("app.py", "packages.txt"):
            shutil.copy2(TEMPLATE / name, staging / name)
        (staging / SETTINGS_FILE).write_text(json.dumps({"model": model}) + "\n", encoding="utf-8")
        readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
        models = "[]" if model == DEFAULT_MODEL_NAME else json.dumps([model])
        readme = readme.replace("$models", models).replace("$sdk_version", metadata.version("gradio"))
        (staging / "README.md").write_text(readme, encoding="utf-8")
        (staging / "requirements.txt").write_text(
            f"# {DISTRIBUTION} with the demo's extra, from the wheel in this folder (it is on no package index)\n"
            f"./{wheel.name}[space]\n",
            encoding="utf-8",
        )
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
