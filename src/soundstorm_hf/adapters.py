"""What a LoRA adapter records of the base model it was trained on, shared by training (which writes it) and the
pipeline (which refuses an adapter on another base)."""

from __future__ import annotations

import hashlib

import torch

# Written beside a LoRA adapter's peft files: the base model it was trained on (name and weights fingerprint).
ADAPTER_INFO_NAME = "soundstorm_adapter.json"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameter names, shapes and a strided sample of their values (rounded to bf16, so
    that fp32 and bf16 loads agree): tells an adapter's base from any other model, even one of the same shapes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.bfloat16).float()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
