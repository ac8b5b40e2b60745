"""Long-form generation for SoundStorm: one sequence of any length, decoded window by window (Borsos et al., 2023,
§3.3). The modules below it: `generation_configuration_soundstorm` (settings and their checks) and
`decoding_soundstorm` (one `generate` call)."""

import torch
from tqdm.auto import tqdm

from .decoding_soundstorm import SoundStormDecodingMixin, SoundStormGenerateOutput, as_ids


class SoundStormGenerationMixin(SoundStormDecodingMixin):
    """`generate` (one call of at most `max_frames` frames) and `generate_long` (any length, in windows) for
    [`SoundStormForConditionalGeneration`]."""

    def generate_long(
        self,
        semantic_ids: torch.LongTensor,
        prompt_ids: torch.LongTensor | None = None,
        prompt_semantic_ids: torch.LongTensor | None = None,
        context_frames: int = 150,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        **kwargs,
    ) -> torch.LongTensor:
        r"""
        Codes of one sequence of any length, generated in windows of at most `max_frames` frames.

        Each window is prompted by the last `context_frames` of what comes before it (the voice prompt, then the
        previous window's output) and fills the rest with new frames, as the paper does for long audio; memory
        stays that of one window and time grows linearly with length. Windows start on alignment-unit boundaries
        so that both streams stay aligned. One generator (from `generator`, else `seed`) serves the whole call, so
        each window draws fresh noise and the call as a whole is reproducible.

        Args:
            semantic_ids (`torch.LongTensor` of shape `(semantic_frames,)`): content of the new audio only.
            prompt_ids (`torch.LongTensor` of shape `(levels, prompt_frames)`, *optional*): voice prompt codes.
            prompt_semantic_ids (`torch.LongTensor` of shape `(prompt_semantic_frames,)`, *optional*): the
                prompt's semantic tokens, aligned to `prompt_ids`.
            context_frames (`int`): frames of context prompting each window (at most half a window).
            generator (`torch.Generator`, *optional*): source of randomness for every window.
            show_progress (`bool`): a progress bar of frames generated (tqdm, on stderr) while the call runs.
            kwargs: passed to `generate` for every window (e.g. `seed`, `temperature`).

        Returns:
            `torch.LongTensor` of shape `(levels, frames)`: the new frames only.
        """
        config = self.config
        frames_per_unit, tokens_per_unit = config.alignment_unit
        device = self.device
        semantic_ids = as_ids("semantic_ids", semantic_ids, device)
        if semantic_ids.ndim != 1:
            raise ValueError(f"`semantic_ids` must have shape (semantic_frames,), got {tuple(semantic_ids.shape)}.")
        if (prompt_ids is None) != (prompt_semantic_ids is None):
            raise ValueError("Pass `prompt_ids` and `prompt_semantic_ids` together.")
        seed = kwargs.pop("seed", (kwargs.get("generation_config") or self.generation_config).seed)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        total_units = semantic_ids.shape[0] // tokens_per_unit
        max_units = config.max_frames // frames_per_unit
        if total_units == 0:
            raise ValueError("Nothing to generate: `semantic_ids` covers no whole acoustic frame.")
        if max_units < 2:
            raise ValueError(
                f"`max_frames` ({config.max_frames}) cannot hold a context and new frames of {frames_per_unit}."
            )
        context_units = max(1, min(context_frames // frames_per_unit, max_units // 2))

        history = torch.empty(config.num_levels, 0, dtype=torch.long, device=device)  # (levels, frames)
        history_semantic = semantic_ids[:0]
        if prompt_ids is not None:
            history = as_ids("prompt_ids", prompt_ids, device)
            history_semantic = as_ids("prompt_semantic_ids", prompt_semantic_ids, device)
            if history.ndim != 2 or history_semantic.ndim != 1:
                raise ValueError("`prompt_ids` must be (levels, frames) and `prompt_semantic_ids` (semantic_frames,).")
            if history.shape[-1] * tokens_per_unit != history_semantic.shape[0] * frames_per_unit:
                raise ValueError(
                    f"The prompt's {history.shape[-1]} frames and {history_semantic.shape[0]} semantic tokens are not "
                    "aligned: cut both to whole semantic units."
                )
        windows, done_units = [], 0
        progress = tqdm(
            total=total_units * frames_per_unit, unit="frame", desc="generating", leave=False, disable=not show_progress
        )
        while done_units < total_units:
            context = min(history.shape[-1] // frames_per_unit, context_units)
            new_units = min(max_units - context, total_units - done_units)
            window_semantic = torch.cat(
                [
                    history_semantic[history_semantic.shape[0] - context * tokens_per_unit :],
                    semantic_ids[done_units * tokens_per_unit : (done_units + new_units) * tokens_per_unit],
                ]
            )
            prompt = history[None, :, history.shape[-1] - context * frames_per_unit :] if context else None
            codes = self.generate(
                window_semantic[None],
                prompt_ids=prompt,
                num_frames=(context + new_units) * frames_per_unit,
                generator=generator,
                **kwargs,
            )
            codes = codes.sequences if isinstance(codes, SoundStormGenerateOutput) else codes
            history = codes[0, :, context * frames_per_unit :]
            history_semantic = window_semantic[context * tokens_per_unit :]
            windows.append(history)
            done_units += new_units
            progress.update(new_units * frames_per_unit)
        progress.close()
        return torch.cat(windows, dim=-1)
