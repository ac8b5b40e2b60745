"""Hugging Face Space entry point: serves `soundstorm_hf.app` (the same app as `soundstorm-hf demo`).

The model is the Space variable `SOUNDSTORM_MODEL` (a Hub id), else the package's bundled default.
"""

try:
    import spaces  # noqa: F401  ZeroGPU wants to be imported before torch touches CUDA
except ImportError:
    pass

import torch

from soundstorm_hf.app import launch_demo
from soundstorm_hf.loading import UserError, load_pipeline, model_t2s

try:
    pipe = load_pipeline(device="cuda" if torch.cuda.is_available() else None)
except UserError as error:
    raise SystemExit(f"soundstorm-hf Space: {error}") from None
launch_demo(pipe, t2s=model_t2s(None, pipe))
