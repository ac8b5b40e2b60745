"""One call of SoundStorm's decoder: level-by-level MaskGIT decoding (Borsos et al., 2023, §3.3)."""

import copy
import warnings
from dataclasses import dataclass

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import ModelOutput

from .generation_configuration_soundstorm import ANNEALINGS, MASK_SCHEDULES, SoundStormGenerationConfig, is_integer

# Integer dtypes accepted for ids given to `generate`; unsigned and bool ones would wrap or mean something else.
ID_DTYPES = (torch.int64, torch.int32, torch.int16)


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


class SoundStormDecodingMixin:
    """`generate` for [`SoundStormForConditionalGeneration`]: coarse-to-fine, confidence-based parallel decoding of
    up to `max_frames` frames in one call."""

    @classmethod
    def can_generate(cls) -> bool:
        """Always: transformers would infer it from a base class named like its own `GenerationMixin`, which this
        decoder is not (it replaces autoregressive decoding)."""
        return True

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
        generation_config = self.resolve_generation_config(generation_config, **kwargs)
        if generator is None and generation_config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(generation_config.seed)

        state = self._prepare_decoding(
            semantic_ids, prompt_ids, attention_mask, num_frames, prompt_lengths, generation_config
        )
        self._warn_if_guidance_is_untrained(generation_config)
        for level, num_steps in enumerate(generation_config.iterations_per_level(self.config.num_levels)):
            self._decode_level(state, level, num_steps, generation_config, generator)
        if bool(state.nonfinite):  # the only host read of the flag: one per call, not one per pass
            raise RuntimeError(
                "The model produced non-finite logits (NaN or inf): its weights are likely corrupt or diverged."
            )
        if generation_config.return_trace or generation_config.return_dict_in_generate:
            return SoundStormGenerateOutput(sequences=state.codes, trace=state.trace)
        return state.codes

    def resolve_generation_config(
        self, generation_config: SoundStormGenerationConfig | None = None, **kwargs
    ) -> SoundStormGenerationConfig:
        """A copy of `generation_config` (else the model's) with `kwargs` applied and checked: what `generate` decodes
        with. Callers with expensive work before `generate` (the pipeline's tokenizing) can check settings first.

        An unknown name is a `TypeError`; a bad value, or a transformers setting the decoder would ignore
        (`num_beams`, ...), a `ValueError` naming it. The model's own settings were checked when it was loaded."""
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        unknown = set(kwargs) - set(vars(generation_config))
        if unknown:
            raise TypeError(f"Unknown generation arguments: {sorted(unknown)}.")
        for name, value in kwargs.items():
            setattr(generation_config, name, value)
        generation_config.validate(strict=True, user_set_attributes=set(kwargs), num_levels=self.config.num_levels)
        return generation_config

    def _warn_if_guidance_is_untrained(self, generation_config: SoundStormGenerationConfig) -> None:
        """Guidance contrasts the model with its unconditional branch, which only training with the condition dropped
        makes meaningful: without it, a guidance scale changes the output but with no reason to improve it."""
        if generation_config.guidance_scale == 1.0:
            return
        untrained = [] if self.config.trained_for_guidance else ["prompt_dropout"]
        if generation_config.guidance_drops_semantic and not self.config.semantic_dropout > 0:
            untrained.append("semantic_dropout")
        if untrained:
            warnings.warn(
                f"guidance_scale={generation_config.guidance_scale} on a model trained without "
                f"{' and '.join(f'`{name}`' for name in untrained)} (0 in its config): its unconditional branch is "
                "untrained, so guidance is not meaningful; use guidance_scale=1.",
                stacklevel=4,  # the caller of `generate` (under its inference-mode wrapper)
            )

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
            greedy = generation_config.is_deterministic or (
                generation_config.greedy_last_iteration and step == num_steps - 1
            )
            tokens, log_probs = self._draw_tokens(logits, step / num_steps, greedy, generation_config, generator)
            state.nonfinite |= (~torch.isfinite(log_probs) & still_masked).any()
            confidence = log_probs
            choice_temperature = generation_config.choice_temperature * ANNEALINGS[
                generation_config.choice_temperature_annealing
            ](step / num_steps)
            if choice_temperature > 0 and not generation_config.is_deterministic:
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
