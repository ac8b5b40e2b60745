"""The SoundStorm training mask (Borsos et al., 2023, §3.2), drawn per example.

Kept free of model code so that its statistics can be tested on their own and so that data
pipelines can draw masks in worker processes.
"""

import math
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskDraw:
    """One draw of the training mask for a single example.

    `masked` marks the tokens replaced by MASK in the model input; `targets` marks the tokens that carry
    the loss (the masked tokens of `level`). Both have shape (levels, frames).
    """

    level: int
    prompt_length: int
    mask_ratio: float
    drop_prompt: bool
    drop_semantic: bool
    masked: torch.Tensor  # (levels, frames) bool
    targets: torch.Tensor  # (levels, frames) bool


def sample_mask(
    num_levels: int,
    num_frames: int,
    generator: torch.Generator | None = None,
    level_weights: torch.Tensor | None = None,
    prompt_dropout: float = 0.0,
    semantic_dropout: float = 0.0,
) -> MaskDraw:
    """Draws the paper's mask for one example of `num_levels` x `num_frames` tokens.

    1. prompt delimiter t ~ U{0, ..., T-1}: frames before t are never masked;
    2. level q ~ U{1, ..., Q} (or `level_weights`, e.g. to favour coarse levels as in MaskGCT);
    3. ratio p = cos(u), u ~ U[0, pi/2]; each level-q token at or after t is masked with probability p,
       at least one;
    4. all tokens at or after t on levels above q are masked; levels below q stay visible;
    5. the loss is taken on the masked level-q tokens only.

    With probability `prompt_dropout` the prompt is hidden from the model altogether (`drop_prompt`) and with
    probability `semantic_dropout` the semantic condition is (`drop_semantic`): the unconditional branches of
    classifier-free guidance.
    """
    if num_levels < 1 or num_frames < 1:
        raise ValueError(f"Cannot mask an empty sequence ({num_levels} levels x {num_frames} frames).")

    def uniform() -> float:
        return torch.rand((), generator=generator).item()

    prompt_length = int(torch.randint(num_frames, (), generator=generator))
    if level_weights is None:
        level = int(torch.randint(num_levels, (), generator=generator))
    else:
        if level_weights.shape != (num_levels,):
            raise ValueError(f"`level_weights` must have shape ({num_levels},), got {tuple(level_weights.shape)}.")
        level = int(torch.multinomial(level_weights.float(), 1, generator=generator))
    mask_ratio = math.cos(uniform() * math.pi / 2)

    num_open = num_frames - prompt_length
    level_masked = torch.rand(num_open, generator=generator) < mask_ratio  # (open frames,)
    if not level_masked.any():
        level_masked[torch.randint(num_open, (), generator=generator)] = True

    masked = torch.zeros(num_levels, num_frames, dtype=torch.bool)
    masked[level, prompt_length:] = level_masked
    masked[level + 1 :, prompt_length:] = True
    targets = torch.zeros_like(masked)
    targets[level] = masked[level]
    return MaskDraw(
        level=level,
        prompt_length=prompt_length,
        mask_ratio=mask_ratio,
        drop_prompt=prompt_length > 0 and uniform() < prompt_dropout,
        drop_semantic=uniform() < semantic_dropout,
        masked=masked,
        targets=targets,
    )


def apply_mask(acoustic_ids: torch.Tensor, draw: MaskDraw, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model input and labels for one example: `acoustic_ids` (levels, frames) -> (input_ids, labels)."""
    input_ids = acoustic_ids.masked_fill(draw.masked, mask_token_id)
    labels = torch.where(draw.targets, acoustic_ids, torch.full_like(acoustic_ids, IGNORE_INDEX))
    return input_ids, labels
