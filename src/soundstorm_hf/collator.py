"""Batching token examples for training: crop, mask per example, pad."""

from collections.abc import Sequence

import torch

from .configuration_soundstorm import SoundStormConfig
from .masking import IGNORE_INDEX, apply_mask, sample_mask


def trim_to_common_duration(
    semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor, config: SoundStormConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cuts `semantic_ids` (frames,) and `acoustic_ids` (levels, frames) to the duration both cover.

    Two tokenizers run over the same audio round its length differently, so their streams may disagree by
    a frame or two; a larger disagreement means the frame rates in the config are wrong, and is an error.
    """
    frames_per_unit, tokens_per_unit = config.alignment_unit
    num_frames = acoustic_ids.shape[-1]
    covered = semantic_ids.shape[-1] // tokens_per_unit * frames_per_unit  # acoustic frames the semantics cover
    tolerance = max(2, frames_per_unit)
    if abs(covered - num_frames) > tolerance:
        raise ValueError(
            f"{semantic_ids.shape[-1]} semantic tokens at {config.semantic_frame_rate} Hz and {num_frames} acoustic "
            f"frames at {config.acoustic_frame_rate} Hz do not cover the same audio: check the frame rates."
        )
    num_frames = min(num_frames, covered)
    return semantic_ids[: config.num_semantic_frames(num_frames)], acoustic_ids[:, :num_frames]


class SoundStormDataCollator:
    """Turns examples `{"semantic_ids": (frames_sem,), "acoustic_ids": (levels, frames)}` into a training batch.

    Each example gets its own window start, its own prompt delimiter, level and mask ratio (see
    `masking.sample_mask`), and its own classifier-free-guidance dropout; then the batch is right-padded: acoustic
    input with MASK, labels with -100, semantics with the null id, and `attention_mask` 0 on padding and on a
    dropped prompt.

    Windows: with `min_frames`, the examples of a batch are cut to one length drawn uniformly between `min_frames`
    and `max_frames` (at most the batch's shortest example), each at its own random start, as the paper trains on
    random 0-30 s windows: one length per batch, so that random windows add no padding. Without it, only examples
    longer than `max_frames` are cut, to exactly `max_frames`. Lengths and starts fall on alignment-unit boundaries.

    Randomness comes from `seed` when given, otherwise from torch's global generator (which
    `DataLoader` workers and `accelerate`'s checkpointing already seed and restore).
    """

    def __init__(
        self,
        config: SoundStormConfig,
        max_frames: int | None = None,
        min_frames: int | None = None,
        level_weights: Sequence[float] | None = None,
        seed: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        self.config = config
        self.max_frames = min(max_frames or config.max_frames, config.max_frames)
        frames_per_unit = config.alignment_unit[0]
        if min_frames is not None and not frames_per_unit <= min_frames <= self.max_frames:
            raise ValueError(
                f"`min_frames` must be in [{frames_per_unit}, max_frames={self.max_frames}], got {min_frames}."
            )
        self.min_frames = min_frames
        self.level_weights = None if level_weights is None else torch.as_tensor(level_weights, dtype=torch.float)
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("Cannot collate an empty list of examples.")
        pairs = [self._tokens(example) for example in examples]
        length = None if self.min_frames is None else self._window_length(min(acoustic.shape[-1] for _, acoustic in pairs))
        return self._pad([self._prepare(*self._crop(semantic, acoustic, length)) for semantic, acoustic in pairs])

    def _tokens(self, example: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """An example's checked semantic ids `(frames_sem,)` and codes `(levels, frames)`, trimmed to one duration."""
        config = self.config
        for key in ("semantic_ids", "acoustic_ids"):
            if key not in example:
                raise KeyError(f"Example is missing the `{key}` column (it has {sorted(example)}).")
        semantic_ids = torch.as_tensor(example["semantic_ids"], dtype=torch.long)
        acoustic_ids = torch.as_tensor(example["acoustic_ids"], dtype=torch.long)
        if semantic_ids.ndim != 1:
            raise ValueError(f"`semantic_ids` must be 1-D (frames,), got shape {tuple(semantic_ids.shape)}.")
        if acoustic_ids.ndim != 2 or acoustic_ids.shape[0] != config.num_levels:
            raise ValueError(
                f"`acoustic_ids` must have shape ({config.num_levels}, frames), got {tuple(acoustic_ids.shape)}."
            )
        return trim_to_common_duration(semantic_ids, acoustic_ids, config)

    def _prepare(self, semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The masked input, labels, attention mask and (maybe dropped) semantics of one windowed example."""
        config = self.config
        draw = sample_mask(
            config.num_levels,
            acoustic_ids.shape[-1],
            generator=self.generator,
            level_weights=self.level_weights,
            prompt_dropout=config.prompt_dropout,
            semantic_dropout=config.semantic_dropout,
        )
        input_ids, labels = apply_mask(acoustic_ids, draw, config.mask_token_id)
        attention_mask = torch.ones(acoustic_ids.shape[-1], dtype=torch.long)
        if draw.drop_prompt:
            attention_mask[: draw.prompt_length] = 0
        if draw.drop_semantic:
            semantic_ids = torch.full_like(semantic_ids, config.semantic_null_id)
        return dict(semantic_ids=semantic_ids, acoustic_ids=input_ids, labels=labels, attention_mask=attention_mask)

    def _window_length(self, num_frames: int) -> int:
        """A window length in alignment units, uniform between `min_frames` and `max_frames` (at most `num_frames`)."""
        frames_per_unit = self.config.alignment_unit[0]
        longest = min(num_frames, self.max_frames) // frames_per_unit
        shortest = min(self.min_frames // frames_per_unit, longest)
        return int(torch.randint(shortest, longest + 1, (), generator=self.generator))

    def _crop(self, semantic_ids: torch.Tensor, acoustic_ids: torch.Tensor, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A window of `length` alignment units (drawn here when None, see the class docstring) at a random start,
        which falls where a semantic token starts."""
        num_frames = acoustic_ids.shape[-1]
        if num_frames < 1:
            raise ValueError("Example has no acoustic frames.")
        frames_per_unit, tokens_per_unit = self.config.alignment_unit
        if length is None and self.min_frames is None:
            if num_frames <= self.max_frames:
                return semantic_ids, acoustic_ids
            length = self.max_frames // frames_per_unit
        elif length is None:
            length = self._window_length(num_frames)
        start = int(torch.randint(num_frames // frames_per_unit - length + 1, (), generator=self.generator))
        return (
            semantic_ids[start * tokens_per_unit : (start + length) * tokens_per_unit],
            acoustic_ids[:, start * frames_per_unit : (start + length) * frames_per_unit],
        )

    def _pad(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        config = self.config
        num_frames = max(row["acoustic_ids"].shape[-1] for row in rows)
        if self.pad_to_multiple_of:
            num_frames = -(-num_frames // self.pad_to_multiple_of) * self.pad_to_multiple_of
        num_semantic = config.num_semantic_frames(num_frames)
        batch = dict(
            semantic_ids=torch.full((len(rows), num_semantic), config.semantic_null_id, dtype=torch.long),
            acoustic_ids=torch.full((len(rows), config.num_levels, num_frames), config.mask_token_id, dtype=torch.long),
            labels=torch.full((len(rows), config.num_levels, num_frames), IGNORE_INDEX, dtype=torch.long),
            attention_mask=torch.zeros((len(rows), num_frames), dtype=torch.long),
        )
        for index, row in enumerate(rows):
            for key, value in row.items():
                batch[key][index, ..., : value.shape[-1]] = value
        return batch
