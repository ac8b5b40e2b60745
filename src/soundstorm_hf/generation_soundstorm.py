"""Level-by-level MaskGIT decoding for SoundStorm (Borsos et al., 2023, §3.3)."""

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import GENERATION_CONFIG_NAME, ModelOutput, cached_file

MASK_SCHEDULES = {
    # Fraction of a level's tokens still masked after a fraction `progress` of its iterations.
    "cosine": lambda progress: math.cos(math.pi / 2 * progress),
    "linear": lambda progress: 1.0 - progress,
    "square": lambda progress: 1.0 - progress**2,
}
ANNEALINGS = {
    # Factor applied to a temperature at a fraction `progress` of a level's iterations (0 on the first one).
    "none": lambda progress: 1.0,
    "linear": lambda progress: 1.0 - progress,
    "cosine": lambda progress: math.cos(math.pi / 2 * progress),
}
# Integer dtypes accepted for ids given to `generate`; unsigned and bool ones would wrap or mean something else.
ID_DTYPES = (torch.int64, torch.int32, torch.int16)


class SoundStormGenerationConfig(GenerationConfig):
    r"""
    Settings of SoundStorm's decoder, saved as `generation_config.json`. Every default below is the value a freshly
    built config holds.

    Args:
        steps_per_level (`list[int]`, *optional*): iterations per RVQ level, coarse to fine. `None` means the paper's
            16 on the first level and 1 on every other (27 forward passes for 12 levels).
        mask_schedule (`str`, defaults to `"cosine"`): how many tokens of a level stay masked after each
            iteration: `"cosine"`, `"linear"` or `"square"`.
        do_sample (`bool`, defaults to `True`): sample the tokens of every iteration but a level's last; `False`
            takes the argmax everywhere.
        temperature (`float`, defaults to 1.0): sampling temperature of token predictions; 0 is the argmax.
        temperature_annealing (`str`, defaults to `"none"`): decay of the temperature over a level's
            iterations: `"none"`, `"linear"` or `"cosine"`.
        top_k (`int`, defaults to `None`), top_p (`float`, defaults to `None`): restrict sampling to the k most likely
            tokens / the smallest set holding probability p (transformers' `TopKLogitsWarper` / `TopPLogitsWarper`).
        choice_temperature (`float`, defaults to 1.0): scale of the Gumbel noise added to the confidences that
            decide which tokens are kept (MaskGIT); 0 ranks by confidence alone.
        choice_temperature_annealing (`str`, defaults to `"linear"`): its decay over a level's iterations.
        greedy_last_iteration (`bool`, defaults to `True`): take the argmax on each level's last iteration,
            hence on every level with a single iteration, as the paper does.
        guidance_scale (`float`, defaults to 1.0): classifier-free guidance. Other than 1, each pass also runs an
            unconditional copy of the batch (prompt hidden, and the semantics too if `guidance_drops_semantic`) in the
            same forward, and logits become `u + scale * (c - u)`: 0 is the unconditional model.
        guidance_drops_semantic (`bool`, defaults to `False`): also drop the semantic condition in the
            unconditional copy (needs a model trained with `semantic_dropout`).
        seed (`int`, defaults to `None`): seeds one generator for the whole call when no `generator` is passed.
        return_trace (`bool`, defaults to `False`): also return, for every token, the forward pass (0-based)
            that fixed it (-1 for prompt and padding).
    """

    def __init__(
        self,
        steps_per_level: list[int] | None = None,
        mask_schedule: str = "cosine",
        temperature_annealing: str = "none",
        choice_temperature: float = 1.0,
        choice_temperature_annealing: str = "linear",
        greedy_last_iteration: bool = True,
        guidance_drops_semantic: bool = False,
        seed: int | None = None,
        return_trace: bool = False,
        **kwargs,
    ):
        self.steps_per_level = None if steps_per_level is None else list(steps_per_level)
        self.mask_schedule = mask_schedule
        self.temperature_annealing = temperature_annealing
        self.choice_temperature = choice_temperature
        self.choice_temperature_annealing = choice_temperature_annealing
        self.greedy_last_iteration = greedy_last_iteration
        self.guidance_drops_semantic = guidance_drops_semantic
        self.seed = seed
        self.return_trace = return_trace
        # transformers' own defaults leave these unset (None), which its decoders read as "off".
        kwargs.setdefault("do_sample", True)
        kwargs.setdefault("temperature", 1.0)
        kwargs.setdefault("guidance_scale", 1.0)
        super().__init__(**kwargs)

    @classmethod
    def from_model_config(cls, model_config) -> "SoundStormGenerationConfig":
        """The paper's schedule for a model's number of levels: 16 iterations, then 1 per level."""
        num_levels = model_config["num_levels"] if isinstance(model_config, dict) else model_config.num_levels
        return cls(steps_per_level=[16] + [1] * (num_levels - 1))

    @classmethod
    def from_folder_or_default(cls, name_or_path, model_config, **hub_kwargs) -> "SoundStormGenerationConfig":
        """The `generation_config.json` of a model folder or Hub repo, or the defaults for `model_config` when it has
        none. A file that exists but does not parse is an error naming it, never silently replaced by defaults."""
        resolved = cached_file(
            name_or_path,
            GENERATION_CONFIG_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **{key: value for key, value in hub_kwargs.items() if value is not None},
        )
        if resolved is None:
            return cls.from_model_config(model_config)
        try:
            return cls.from_dict(cls._dict_from_json_file(resolved))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"Invalid {GENERATION_CONFIG_NAME} at {resolved}: {error}") from error

    def check(self, num_levels: int) -> list[int]:
        """Validates the settings for a model of `num_levels`; returns the iterations per level.

        Every bad value is a `ValueError` or `TypeError` naming the setting, raised before any decoding work."""
        steps = self.steps_per_level or [16] + [1] * (num_levels - 1)
        if len(steps) != num_levels or any(not is_integer(s) or s < 1 for s in steps):
            raise ValueError(f"`steps_per_level` must list {num_levels} positive integers, got {steps}.")
        for name, value, choices in (
            ("mask_schedule", self.mask_schedule, MASK_SCHEDULES),
            ("temperature_annealing", self.temperature_annealing, ANNEALINGS),
            ("choice_temperature_annealing", self.choice_temperature_annealing, ANNEALINGS),
        ):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
        for name, low in (("temperature", 0.0), ("choice_temperature", 0.0), ("guidance_scale", 0.0)):
            value = getattr(self, name)
            if name == "temperature" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise ValueError(f"`{name}` must be a finite number >= {low}, got {value!r}.")
        if self.top_k is not None and (not is_integer(self.top_k) or self.top_k < 1):
            raise TypeError(f"`top_k` must be a positive integer, got {self.top_k!r}.")
        if self.top_p is not None and (
            isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1
        ):
            raise ValueError(f"`top_p` must be a number in (0, 1], got {self.top_p!r}.")
        if self.seed is not None and not is_integer(self.seed):
            raise TypeError(f"`seed` must be an integer, got {self.seed!r}.")
        return [int(s) for s in steps]


def is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SoundStormGenerateOutput(ModelOutput):
    """
    Args:
        sequences (`torch.LongTensor` of shape `(batch, levels, frames)`): generated codes, prompt included;
            padding frames hold the MASK id.
        trace (`torch.LongTensor` of shape `(batch, levels, frames)`): forward pass that fixed each token,
            -1 for prompt and padding.
    """

    sequences: torch.LongTensor | None = None
    trace: torch.LongTensor | None = None


@dataclass
class DecodingState:
    """What one `generate` call carries from pass to pass."""

    codes: torch.LongTensor  # (batch, levels, frames): MASK where not yet generated
    trace: torch.LongTensor  # (batch, levels, frames): pass that fixed each token, -1 if none
    valid: torch.BoolTensor  # (batch, frames): frames inside each row's length
    num_to_generate: torch.LongTensor  # (batch,): frames to generate per row (the same on every level)
    semantic_embeds: torch.Tensor  # (batch[*2], frames, hidden): the condition, with its unconditional copy if guided
    attention_mask: torch.Tensor | None  # (batch[*2], frames), None when every frame is visible
    guidance_scale: float | None  # None: no classifier-free guidance
    nonfinite: torch.BoolTensor  # (): set on the device when a pass produced non-finite logits
    forward_passes: int = 0


def sample_tokens(scores: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from `softmax(scores)`: (..., vocab) -> (...).

    Gumbel-max: the argmax of the scores plus standard Gumbel noise is distributed as the softmax. It costs a few
    elementwise passes over the scores, where `torch.multinomial` needs a softmax, a cumulative sum and a search per
    row."""
    return gumbel_noise(scores, generator).add_(scores).argmax(dim=-1)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel samples of `like`'s shape, `-log(-log(u))` for uniform `u`: on a CPU, uniform draws and two
    logarithms cost a fifth of `Tensor.exponential_` (which samples one element at a time there)."""
    uniform = torch.rand(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    return uniform.log_().neg_().log_().neg_()


def positions_to_fix(
    confidence: torch.Tensor, still_masked: torch.Tensor, num_to_keep_masked: torch.Tensor
) -> torch.BoolTensor:
    """The still-masked positions to fix this iteration: all but the `num_to_keep_masked` least confident per row.

    Ranking is within one level only (the paper's point against ranking across levels). At least one position is
    fixed per row with any left, so a level always finishes in its iterations.

    Args:
        confidence (`(batch, frames)`), still_masked (`(batch, frames)` bool), num_to_keep_masked (`(batch,)`).
    """
    keep = torch.minimum(num_to_keep_masked, still_masked.sum(dim=1) - 1).clamp(min=0)
    confidence = confidence.masked_fill(~still_masked, float("inf"))
    # Rank of each position (0 = least confident): one sort, then its inverse permutation.
    order = confidence.argsort(dim=1)
    frames = torch.arange(confidence.shape[1], device=confidence.device)
    rank = torch.empty_like(order).scatter_(1, order, frames.expand_as(order))
    return still_masked & (rank >= keep[:, None])


class SoundStormGenerationMixin:
    """`generate` for [`SoundStormForConditionalGeneration`]: coarse-to-fine, confidence-based parallel decoding."""

    @torch.inference_mode()
    def generate(
        self,
        semantic_ids: torch.LongTensor,
        prompt_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_frames: int | None = None,
        generation_config: SoundStormGenerationConfig | None = None,
        prompt_lengths: torch.LongTensor | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> torch.LongTensor | SoundStormGenerateOutput:
        r"""
        Generates acoustic codes for `semantic_ids`, continuing `prompt_ids` when given.

        Args:
            semantic_ids (`torch.LongTensor` of shape `(batch, semantic_frames)`): content of the whole
                output, prompt part included.
            prompt_ids (`torch.LongTensor` of shape `(batch, levels, prompt_frames)`, *optional*): codes of
                the voice prompt, returned unchanged at the start of each row.
            attention_mask (`torch.Tensor` of shape `(batch, frames)`, *optional*): 1 on each row's frames,
                0 on right padding, so that rows may have their own length.
            num_frames (`int`, *optional*): output frames; defaults to what `semantic_ids` covers.
            generation_config (`SoundStormGenerationConfig`, *optional*): defaults to `self.generation_config`;
                any of its fields may also be passed as keyword arguments.
            prompt_lengths (`torch.LongTensor` of shape `(batch,)`, *optional*): each row's prompt length
                when the rows of `prompt_ids` are right-padded; defaults to `prompt_frames` for all.
            generator (`torch.Generator`, *optional*): source of randomness (else `seed`, else torch's global one).

        Returns:
            `torch.LongTensor` of shape `(batch, levels, frames)`, or a [`SoundStormGenerateOutput`] with the
            trace when `return_trace=True`. The number of forward passes is `sum(steps_per_level)`, whatever
            the length.
        """
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        unknown = generation_config.update(**kwargs)
        if unknown:
            raise TypeError(f"Unknown generation arguments: {sorted(unknown)}.")
        steps_per_level = generation_config.check(self.config.num_levels)
        if generator is None and generation_config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(generation_config.seed)

        state = self._prepare_decoding(
            semantic_ids, prompt_ids, attention_mask, num_frames, prompt_lengths, generation_config
        )
        for level, num_steps in enumerate(steps_per_level):
            self._decode_level(state, level, num_steps, generation_config, generator)
        if bool(state.nonfinite):  # the only host read of the flag: one per call, not one per pass
            raise RuntimeError(
                "The model produced non-finite logits (NaN or inf): its weights are likely corrupt or diverged."
            )
        if generation_config.return_trace or generation_config.return_dict_in_generate:
            return SoundStormGenerateOutput(sequences=state.codes, trace=state.trace)
        return state.codes

    def _prepare_decoding(
        self, semantic_ids, prompt_ids, attention_mask, num_frames, prompt_lengths, generation_config
    ) -> DecodingState:
        """Checks every input (before anything of their size is allocated), places the prompts, and embeds the
        condition once (it does not change across passes), with its unconditional copy under guidance."""
        config = self.config
        device = self.device
        semantic_ids = as_ids("semantic_ids", semantic_ids, device)
        if semantic_ids.ndim != 2:
            raise ValueError(f"`semantic_ids` must have shape (batch, frames), got {tuple(semantic_ids.shape)}.")
        batch = semantic_ids.shape[0]
        if batch == 0:
            raise ValueError("`semantic_ids` is an empty batch (0 rows).")
        num_frames = self._resolve_num_frames(semantic_ids, attention_mask, num_frames)
        lengths = self._row_lengths(attention_mask, batch, num_frames)  # (batch,)
        if prompt_ids is not None:
            prompt_ids = as_ids("prompt_ids", prompt_ids, device)
        prompt_lengths = self._resolve_prompt_lengths(prompt_ids, prompt_lengths, lengths)

        frames = torch.arange(num_frames, device=device)
        valid = frames < lengths[:, None]  # (batch, frames)
        in_prompt = frames < prompt_lengths[:, None]  # (batch, frames)
        codes = torch.full((batch, config.num_levels, num_frames), config.mask_token_id, dtype=torch.long, device=device)
        if prompt_ids is not None:
            prompt_ids = prompt_ids[..., :num_frames]  # right padding beyond the output is never read
            width = prompt_ids.shape[-1]
            codes[..., :width] = torch.where(in_prompt[:, None, :width], prompt_ids, codes[..., :width])
        self.model.check_inputs(semantic_ids, codes, valid.long())

        semantic_embeds = self.model.embeddings.embed_semantic(semantic_ids, num_frames)  # (batch, frames, hidden)
        visible = valid
        guidance_scale = generation_config.guidance_scale
        guided = guidance_scale != 1.0
        if guided:
            if not bool(in_prompt.any()) and not generation_config.guidance_drops_semantic:
                raise ValueError(
                    "Classifier-free guidance (`guidance_scale` other than 1) needs a condition to drop: pass "
                    "`prompt_ids` or set `guidance_drops_semantic=True`."
                )
            unconditional_embeds = semantic_embeds
            if generation_config.guidance_drops_semantic:
                null_ids = torch.full_like(semantic_ids, config.semantic_null_id)
                unconditional_embeds = self.model.embeddings.embed_semantic(null_ids, num_frames)
            # Conditional and unconditional rows share one forward; the latter does not see the prompt. A row whose
            # prompt covers all of it has nothing to generate, so its unconditional copy, unused, keeps its frames
            # visible rather than hiding every key (a fully hidden attention row is NaN in some implementations).
            unconditional_visible = valid & ~in_prompt
            nothing_visible = ~unconditional_visible.any(dim=1, keepdim=True)
            semantic_embeds = torch.cat([semantic_embeds, unconditional_embeds])
            visible = torch.cat([valid, torch.where(nothing_visible, valid, unconditional_visible)])
        return DecodingState(
            codes=codes,
            trace=torch.full_like(codes, -1),
            valid=valid,
            num_to_generate=(valid & ~in_prompt).sum(dim=1),
            semantic_embeds=semantic_embeds,
            attention_mask=None if bool(visible.all()) else visible.long(),
            guidance_scale=guidance_scale if guided else None,
            nonfinite=torch.zeros((), dtype=torch.bool, device=device),
        )

    def _decode_level(self, state: DecodingState, level: int, num_steps: int, generation_config, generator) -> None:
        """Fills level `level` in `num_steps` passes: each samples every masked token of the level and fixes the
        most confident ones, as many as the mask schedule says; the level's last pass fixes the rest."""
        mask_id = self.config.mask_token_id
        schedule = MASK_SCHEDULES[generation_config.mask_schedule]
        for step in range(num_steps):
            logits = self._level_logits_of_pass(state, level)  # (batch, frames, vocab)
            still_masked = state.valid & (state.codes[:, level] == mask_id)  # (batch, frames)
            greedy = not generation_config.do_sample or (
                generation_config.greedy_last_iteration and step == num_steps - 1
            )
            tokens, log_probs = self._draw_tokens(logits, step / num_steps, greedy, generation_config, generator)
            state.nonfinite |= (~torch.isfinite(log_probs) & still_masked).any()
            confidence = log_probs
            choice_temperature = generation_config.choice_temperature * ANNEALINGS[
                generation_config.choice_temperature_annealing
            ](step / num_steps)
            if choice_temperature > 0:
                confidence = confidence + choice_temperature * gumbel_noise(confidence, generator)

            num_to_keep_masked = (state.num_to_generate * schedule((step + 1) / num_steps)).floor().long()
            fixed = positions_to_fix(confidence, still_masked, num_to_keep_masked)
            state.codes[:, level] = torch.where(fixed, tokens, state.codes[:, level])
            state.trace[:, level] = torch.where(fixed, state.forward_passes, state.trace[:, level])
            state.forward_passes += 1

    def _level_logits_of_pass(self, state: DecodingState, level: int) -> torch.Tensor:
        """One forward pass: the logits `(batch, frames, vocab)` of `level`'s head, guided if asked."""
        codes = state.codes if state.guidance_scale is None else torch.cat([state.codes, state.codes])
        # No reference to the pass's output outlives this line: a CUDA-graph replay may reuse its memory.
        logits = self.level_logits(
            self.model(
                acoustic_ids=codes, attention_mask=state.attention_mask, semantic_embeds=state.semantic_embeds
            ).last_hidden_state,
            level,
        ).float()
        if state.guidance_scale is None:
            return logits
        conditional, unconditional = logits.chunk(2)
        return unconditional + state.guidance_scale * (conditional - unconditional)

    @staticmethod
    def _draw_tokens(logits, progress: float, greedy: bool, generation_config, generator):
        """Tokens `(batch, frames)` and their log-probabilities under the unfiltered model."""
        temperature = (generation_config.temperature or 0.0) * ANNEALINGS[generation_config.temperature_annealing](
            progress
        )
        if greedy or temperature <= 0:
            tokens = logits.argmax(dim=-1)
        else:
            warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else [])
            if generation_config.top_k is not None:
                warpers.append(TopKLogitsWarper(generation_config.top_k))
            if generation_config.top_p is not None and generation_config.top_p < 1.0:
                warpers.append(TopPLogitsWarper(generation_config.top_p))
            scores = warpers(None, logits.flatten(0, 1))  # the warpers take (rows, vocab)
            tokens = sample_tokens(scores, generator).view(logits.shape[:-1])
        log_probs = logits.gather(-1, tokens[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
        return tokens, log_probs

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
                **kwargs,
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

    def _resolve_num_frames(self, semantic_ids, attention_mask, num_frames) -> int:
        """Output length: `num_frames`, else the mask's length, else what `semantic_ids` covers; at most
        `max_frames`, checked before any buffer of that length exists."""
        if num_frames is not None and not is_integer(num_frames):
            raise TypeError(f"`num_frames` must be an integer, got {num_frames!r}.")
        if num_frames is None and attention_mask is not None:
            num_frames = torch.as_tensor(attention_mask).shape[-1]
            if self.config.num_semantic_frames(num_frames) != semantic_ids.shape[1]:
                raise ValueError(
                    f"`attention_mask` covers {num_frames} frames, which need "
                    f"{self.config.num_semantic_frames(num_frames)} semantic tokens, but `semantic_ids` has "
                    f"{semantic_ids.shape[1]}: the mask must have one entry per output frame."
                )
        if num_frames is None:
            num_frames = self.config.num_acoustic_frames(semantic_ids.shape[1])
        if num_frames < 1:
            raise ValueError("Nothing to generate: the sequence is empty (0 frames).")
        self.config.check_num_frames(num_frames)
        return int(num_frames)

    def _row_lengths(self, attention_mask, batch: int, num_frames: int) -> torch.Tensor:
        """Frames per row from a right-padded `attention_mask` (batch, frames)."""
        device = self.device
        if attention_mask is None:
            return torch.full((batch,), num_frames, device=device)
        attention_mask = torch.as_tensor(attention_mask, device=device)
        if tuple(attention_mask.shape) != (batch, num_frames):
            raise ValueError(
                f"`attention_mask` must have shape (batch, frames) = {(batch, num_frames)} to match `semantic_ids` "
                f"and `num_frames`, got {tuple(attention_mask.shape)}."
            )
        lengths = attention_mask.long().sum(dim=1)
        if not torch.equal(attention_mask.bool(), torch.arange(num_frames, device=device) < lengths[:, None]):
            raise ValueError("`attention_mask` must be 1 on each row's first frames and 0 after (right padding).")
        if bool((lengths == 0).any()):
            raise ValueError("A row of `attention_mask` is empty (0 frames).")
        return lengths

    def _resolve_prompt_lengths(self, prompt_ids, prompt_lengths, lengths) -> torch.Tensor:
        """Each row's prompt length `(batch,)`, checked against `prompt_ids` and the row's length."""
        batch, device = lengths.shape[0], lengths.device
        if prompt_ids is None:
            if prompt_lengths is not None:
                raise ValueError("`prompt_lengths` was given without `prompt_ids`.")
            return torch.zeros(batch, dtype=torch.long, device=device)
        num_levels = self.config.num_levels
        if prompt_ids.ndim != 3 or tuple(prompt_ids.shape[:2]) != (batch, num_levels):
            raise ValueError(
                f"`prompt_ids` must have shape (batch={batch}, levels={num_levels}, prompt_frames), "
                f"got {tuple(prompt_ids.shape)}."
            )
        prompt_frames = prompt_ids.shape[-1]
        if prompt_lengths is None:
            prompt_lengths = torch.full((batch,), prompt_frames, device=device)
        prompt_lengths = as_ids("prompt_lengths", prompt_lengths, device)
        if tuple(prompt_lengths.shape) != (batch,) or bool((prompt_lengths < 0).any() | (prompt_lengths > prompt_frames).any()):
            raise ValueError(f"`prompt_lengths` must be {batch} values in [0, {prompt_frames}].")
        too_long = prompt_lengths > lengths
        if bool(too_long.any()):
            row = int(too_long.nonzero()[0])
            raise ValueError(
                f"The prompt of row {row} ({int(prompt_lengths[row])} frames) is longer than its sequence "
                f"({int(lengths[row])} frames)."
            )
        in_prompt = torch.arange(prompt_frames, device=device) < prompt_lengths[:, None]  # (batch, prompt_frames)
        prompt_tokens = prompt_ids.transpose(0, 1)[:, in_prompt]  # (levels, prompt tokens)
        codebook_size = self.config.codebook_size
        if prompt_tokens.numel() and (int(prompt_tokens.min()) < 0 or int(prompt_tokens.max()) >= codebook_size):
            raise ValueError(f"`prompt_ids` holds codes outside [0, codebook_size={codebook_size}).")
        return prompt_lengths


def as_ids(name: str, ids, device) -> torch.Tensor:
    """`ids` as a long tensor on `device`; floats, bools and unsigned integers are refused, not rounded or wrapped."""
    ids = torch.as_tensor(ids, device=device)
    if ids.dtype not in ID_DTYPES:
        raise ValueError(f"`{name}` must hold integer ids (int64, int32 or int16), got dtype {ids.dtype}.")
    return ids.long()
