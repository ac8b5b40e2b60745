"""Finding and loading a model for the front ends (the CLI, the demo, the Space), with mistakes reported as one-line
`UserError`s instead of tracebacks.

The layer between the front ends and the pipeline: the front ends import this, this imports the pipeline, and
nothing here imports torch until a model is loaded, so that `--help` and argument errors answer at once.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

MODEL_ENV = "SOUNDSTORM_MODEL"
# Seeds torch's generators accept.
MAX_SEED = 2**64 - 1


class UserError(Exception):
    """A problem with what the user asked for: printed as one line, without a traceback."""


def resolve_model(name: str | None) -> str:
    """`name`, else `$SOUNDSTORM_MODEL`, else the bundled default; a folder-like name must exist."""
    from . import pipeline

    name = name or os.environ.get(MODEL_ENV) or pipeline.DEFAULT_MODEL_NAME
    if name == pipeline.DEFAULT_MODEL_NAME:
        try:
            return str(pipeline.bundled_default_model())
        except FileNotFoundError as error:
            raise UserError(f"{error}: pass --model with a model folder or Hub id, or set {MODEL_ENV}") from None
    looks_like_folder = name.startswith((".", "/", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name
    if looks_like_folder and not Path(name).expanduser().is_dir():
        raise UserError(f"--model: model folder not found: {name}")
    return str(Path(name).expanduser()) if looks_like_folder else name


def load_pipeline(name: str | None = None, device: str | None = None, adapter: str | None = None):
    """The pipeline named by `name` / `$SOUNDSTORM_MODEL` / the default (with a LoRA `adapter` merged in), or a
    `UserError` saying why not: a device that does not exist, a damaged or inconsistent model folder, an adapter
    that is not one (naming the file at fault)."""
    check_device(device)
    path = resolve_model(name)
    from transformers.utils import logging

    from .pipeline import SoundStormPipeline, load_adapter

    logging.disable_progress_bar()  # errors after loading stay one line
    if Path(path).is_dir():
        check_weights(Path(path))
    try:
        pipe = SoundStormPipeline.from_pretrained(path, device=device)
    except pickle.UnpicklingError:
        raise UserError(
            f"--model: {path}: its pytorch_model.bin holds Python objects besides tensors, which are not loaded (they "
            "could run code); save the weights as model.safetensors"
        ) from None
    except (TypeError, KeyError, AttributeError) as error:  # e.g. a pickled list where a state dict belongs
        raise UserError(f"--model: cannot load {path}: its weights are not a state dict ({first_line(error)})") from None
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(f"--model: cannot load {path}: {first_line(error)}") from None
    if adapter is not None:
        try:
            pipe.model = load_adapter(pipe.model, adapter, path).eval()
        except (OSError, ValueError, ImportError) as error:
            raise UserError(f"--adapter: {first_line(error).removeprefix('adapter: ')}") from None
    return pipe


def check_weights(folder: Path) -> None:
    """Refuses a folder whose `config.json` does not describe its `model.safetensors` (a size or layer count changed,
    another model's weights, a truncated file), naming the first disagreement, before loading: transformers would
    re-initialize the weights that do not fit and generate noise, or fail with a table of every tensor."""
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / "config.json").is_file():
        return  # sharded or .bin weights, or no folder at all: from_pretrained names the problem
    import torch
    from safetensors import SafetensorError, safe_open

    from .configuration_soundstorm import SoundStormConfig
    from .modeling_soundstorm import SoundStormForConditionalGeneration

    try:
        with safe_open(weights, "pt") as file:
            stored = {key: list(file.get_slice(key).get_shape()) for key in file.keys()}
    except SafetensorError as error:
        raise UserError(f"--model: {weights} is damaged or truncated ({first_line(error)})") from None
    try:
        with torch.device("meta"):  # shapes only, no memory
            model = SoundStormForConditionalGeneration(SoundStormConfig.from_pretrained(folder))
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"--model: {folder / 'config.json'} is not a valid SoundStorm config ({first_line(error)})") from None
    expected = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    if not expected.keys() & stored.keys():
        return  # saved under another prefix: transformers maps the names
    problems = [
        f"{key} is {stored[key]} in the weights, {shape} by the config"
        for key, shape in expected.items()
        if key in stored and stored[key] != shape
    ]
    problems += [f"{key} is missing from the weights" for key in expected.keys() - stored.keys()]
    problems += [f"the weights hold {key}, which the config has no place for" for key in stored.keys() - expected.keys()]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"--model: {folder}/config.json does not match model.safetensors: {problems[0]}{more}")


def check_device(device: str | None) -> None:
    """A torch device string that names a device this machine has, or a `UserError` saying what is wrong."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device: {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    available = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": lambda: torch.backends.mps.is_available(),
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if not available.get(parsed.type, lambda: False)():
        raise UserError(f"--device: {device}: no such device is available on this machine")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UserError(f"--device: {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def model_t2s(name: str | None, pipe):
    """The T2S model of the model folder (`text.frontend.find_t2s`), on the pipeline's device, or None (the offline
    front end)."""
    from .text.frontend import load_t2s

    return load_t2s(resolve_model(name), device=pipe.model.device)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
