"""Long-form generation for SoundStorm: one sequence of any length, decoded window by window (Borsos et al., 2023,
§3.3). The modules below it: `generation_configuration_soundstorm` (settings and their checks) and
`decoding_soundstorm` (one `generate` call)."""

from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from .decoding_soundstorm import SoundStormDecodingMixin, SoundStormGenerateOutput, as_ids
from .generation_configuration_soundstorm import is_integer


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
        streamer: Callable[[torch.LongTensor], None] | None = None,
        first_window_frames: int | None = None,
        keep_prompt: bool = True,
        return_trace: bool = False,
        **kwargs,
    ) -> torch.LongTensor | SoundStormGenerateOutput:
        r"""
        Codes of one sequence of any length, generated in windows of at most `max_frames` frames.

        Each window is prompted by what comes before it and fills the rest with new frames, as the paper does for
        long audio; memory stays that of one window and time grows linearly with length. Windows start on
        alignment-unit boundaries so that both streams stay aligned. One generator (from `generator`, else `seed`)
        serves the whole call, so each window draws fresh noise and the call as a whole is reproducible. The
        windows themselves are `generate_windows`; this call collects them.

        Args:
            semantic_ids (`torch.LongTensor` of shape `(semantic_frames,)`): content of the new audio only.
            prompt_ids (`torch.LongTensor` of shape `(levels, prompt_frames)`, *optional*): voice prompt codes.
            prompt_semantic_ids (`torch.LongTensor` of shape `(prompt_semantic_frames,)`, *optional*): the
                prompt's semantic tokens, aligned to `prompt_ids`.
            context_frames (`int`): frames of context prompting each window (at most half a window).
            generator (`torch.Generator`, *optional*): source of randomness for every window.
            show_progress (`bool`): a progress bar of frames generated (tqdm, on stderr) while the call runs.
            streamer (`Callable`, *optional*): called after each window with its new codes `(levels, new_frames)`,
                in order; they are final, so a caller can decode and play them while the next window is generated.
            first_window_frames (`int`, *optional*): new frames of the first window (rounded up to whole alignment
                units); short, it gives the streamer its first codes sooner. Later windows are as long as fits.
            keep_prompt (`bool`): every window after the first is prompted by the voice prompt's last
                `context_frames`, then the previous window's last `context_frames`, so that the voice is seen
                anew in every window rather than carried (with its errors) from window to window.
            return_trace (`bool`): also return, for every new token, the forward pass of the whole call (0-based,
                counting on across windows) that fixed it.
            kwargs: passed to `generate` for every window (e.g. `seed`, `temperature`).

        Returns:
            `torch.LongTensor` of shape `(levels, frames)`: the new frames only; with `return_trace`, a
            [`SoundStormGenerateOutput`] of that `sequences` and its `trace` `(levels, frames)`.
        """
        windows, traces = [], []
        for codes, trace in self.generate_windows(
            semantic_ids,
            prompt_ids,
            prompt_semantic_ids,
            context_frames,
            generator,
            show_progress,
            first_window_frames=first_window_frames,
            keep_prompt=keep_prompt,
            return_trace=return_trace,
            **kwargs,
        ):
            windows.append(codes)
            traces.append(trace)
            if streamer is not None:
                streamer(codes)
        sequences = torch.cat(windows, dim=-1)
        if return_trace:
            return SoundStormGenerateOutput(sequences=sequences, trace=torch.cat(traces, dim=-1))
        return sequences

    def generate_windows(
        self,
        semantic_ids: torch.LongTensor,
        prompt_ids: torch.LongTensor | None = None,
        prompt_semantic_ids: torch.LongTensor | None = None,
        context_frames: int = 150,
        generator: torch.Generator | None = None,
        show_progress: bool = False,
        first_window_frames: int | None = None,
        keep_prompt: bool = True,
        return_trace: bool = False,
        **kwargs,
    ) -> Iterator[tuple[torch.LongTensor, torch.LongTensor | None]]:
        """`generate_long` one window at a time: yields each window's new codes `(levels, new_frames)` and their
        trace (`None` without `return_trace`) as soon as the window is generated, so that a caller can stream them.
        Arguments as for `generate_long`; they are checked before the first window."""
        config = self.config
        frames_per_unit, tokens_per_unit = config.alignment_unit
        device = self.device
        semantic_ids = as_ids("semantic_ids", semantic_ids, device)
        if semantic_ids.ndim != 1:
            raise ValueError(f"`semantic_ids` must have shape (semantic_frames,), got {tuple(semantic_ids.shape)}.")
        if (prompt_ids is None) != (prompt_semantic_ids is None):
            raise ValueError("Pass `prompt_ids` and `prompt_semantic_ids` together.")
        if first_window_frames is not None and (not is_integer(first_window_frames) or first_window_frames < 1):
            raise ValueError(f"`first_window_frames` must be a positive integer, got {first_window_frames!r}.")
        settings = self.resolve_generation_config(**kwargs)  # every setting checked before the first window
        if generator is None and settings.seed is not None:
            generator = torch.Generator(device=device).manual_seed(settings.seed)
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
        # The voice prompt's last units, prefixed to every window after the first (which is prompted by them anyway).
        prefix_units = min(history.shape[-1] // frames_per_unit, context_units, max_units - context_units - 1)
        prefix_units = prefix_units if keep_prompt else 0
        prefix = history[:, history.shape[-1] - prefix_units * frames_per_unit :]
        prefix_semantic = history_semantic[history_semantic.shape[0] - prefix_units * tokens_per_unit :]
        new_units_limit = -(-first_window_frames // frames_per_unit) if first_window_frames else max_units
        done_units, passes = 0, 0
        progress = tqdm(
            total=total_units * frames_per_unit, unit="frame", desc="generating", leave=False, disable=not show_progress
        )
        while done_units < total_units:
            context = min(history.shape[-1] // frames_per_unit, context_units)
            fixed = prefix_units if done_units else 0
            new_units = min(max_units - fixed - context, new_units_limit, total_units - done_units)
            window_semantic = torch.cat(
                [
                    prefix_semantic[prefix_semantic.shape[0] - fixed * tokens_per_unit :],
                    history_semantic[history_semantic.shape[0] - context * tokens_per_unit :],
                    semantic_ids[done_units * tokens_per_unit : (done_units + new_units) * tokens_per_unit],
                ]
            )
            prompt = torch.cat(
                [
                    prefix[:, prefix.shape[-1] - fixed * frames_per_unit :],
                    history[:, history.shape[-1] - context * frames_per_unit :],
                ],
                dim=-1,
            )
            start = (fixed + context) * frames_per_unit
            output = self.generate(
                window_semantic[None],
                prompt_ids=prompt[None] if start else None,
                num_frames=start + new_units * frames_per_unit,
                generator=generator,
                return_trace=return_trace,
                generation_config=settings,
            )
            codes = output.sequences if isinstance(output, SoundStormGenerateOutput) else output
            history = codes[0, :, start:]
            history_semantic = window_semantic[start // frames_per_unit * tokens_per_unit :]
            trace = None
            if return_trace:
                trace = output.trace[0, :, start:]
                trace = trace + passes  # the window's last pass fixes the rest of the last level: it is its maximum
                passes = int(trace.max()) + 1
            progress.update(new_units * frames_per_unit)
            yield history, trace
            done_units += new_units
            new_units_limit = max_units
        progress.close()
