"""Hugging Face Space entry point: serves `soundstorm_hf.app` (the same app as `soundstorm-hf demo`).

The model is the Space variable `SOUNDSTORM_MODEL`, else `space.json`'s `model` beside this file.
"""

try:
    import spaces  # noqa: F401  ZeroGPU wants to be imported before torch touches CUDA
except ImportError:
    pass

import json
import os
from pathlib import Path

import torch

from soundstorm_hf.app import launch_demo
from soundstorm_hf.loading import UserError, load_pipeline, model_t2s

model = os.environ.get("SOUNDSTORM_MODEL") or json.loads((Path(__file__).parent / "space.json").read_text())["model"]
try:
    pipe = load_pipeline(model, device="cuda" if torch.cuda.is_available() else None)
except UserError as error:
    raise SystemExit(f"soundstorm-hf Space: {error}") from None
launch_demo(pipe, t2s=model_t2s(model, pipe))
