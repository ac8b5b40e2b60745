"""Level-by-level MaskGIT decoding for SoundStorm (Borsos et al., 2023, §3.3)."""

import copy
import math
from dataclasses import dataclass

import torch
from transformers import GenerationConfig
from transformers.utils import ModelOutput

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


class SoundStormGenerationConfig(GenerationConfig):
    r"""
    Settings of SoundStorm's decoder, saved as `generation_config.json`.

    Args:
        steps_per_level (`list[int]`, *optional*): iterations per RVQ level, coarse to fine. Defaults to the
            paper's 16 on the first level and 1 on every other (27 forward passes for 12 levels).
        mask_schedule (`str`, defaults to `"cosine"`): how many tokens of a level stay masked after each
            iteration: `"cosine"`, `"linear"` or `"square"`.
        temperature (`float`, defaults to 1.0): sampling temperature of token predictions.
        temperature_annealing (`str`, defaults to `"none"`): decay of the temperature over a level's
            iterations: `"none"`, `"linear"` or `"cosine"`.
        choice_temperature (`float`, defaults to 1.0): scale of the Gumbel noise added to the confidences
            that decide which tokens are kept (MaskGIT); 0 ranks by confidence alone.
        choice_temperature_annealing (`str`, defaults to `"linear"`): its decay over a level's iterations.
        top_k (`int`, *optional*), top_p (`float`, *optional*): restrict sampling to the k most likely tokens /
            the smallest set holding probability p.
        greedy_last_iteration (`bool`, defaults to `True`): take the argmax on each level's last iteration,
            hence on every level with a single iteration, as the paper does.
        do_sample (`bool`, defaults to `True`): `False` takes the argmax on every iteration.
        guidance_scale (`float`, defaults to 1.0): classifier-free guidance; above 1, each pass also runs an
            unconditional copy of the batch (prompt hidden, and the semantics too if
            `guidance_drops_semantic`) in the same forward, and logits become `u + scale * (c - u)`.
        guidance_drops_semantic (`bool`, defaults to `False`): also drop the semantic condition in the
            unconditional copy (needs a model trained with `semantic_dropout`).
        seed (`int`, *optional*): seeds a generator for the whole call when no `generator` is passed.
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
        kwargs.setdefault("do_sample", True)
        kwargs.setdefault("guidance_scale", 1.0)
        super().__init__(**kwargs)

    @classmethod
    def for_model_config(cls, config, first_level_steps: int = 16) -> "SoundStormGenerationConfig":
        """The paper's schedule for a model's number of levels: `first_level_steps`, then 1 per level."""
        return cls(steps_per_level=[first_level_steps] + [1] * (config.num_levels - 1))

    def check(self, num_levels: int) -> list[int]:
        """Validates the settings for a model of `num_levels`; returns the iterations per level."""
        steps = self.steps_per_level or [16] + [1] * (num_levels - 1)
        if len(steps) != num_levels or any(not isinstance(s, int) or s < 1 for s in steps):
            raise ValueError(f"`steps_per_level` must list {num_levels} positive integers, got {steps}.")
        for name, value, choices in (
            ("mask_schedule", self.mask_schedule, MASK_SCHEDULES),
            ("temperature_annealing", self.temperature_annealing, ANNEALINGS),
            ("choice_temperature_annealing", self.choice_temperature_annealing, ANNEALINGS),
        ):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, got {self.top_k}.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        return steps


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


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Sets logits outside the top-k / nucleus to -inf; (..., vocab) -> (..., vocab)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        outside = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keeps the token that crosses top_p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    return logits


def gumbel_noise(shape, generator, device) -> torch.Tensor:
    """Standard Gumbel samples: minus the log of unit-rate exponential samples."""
    return -torch.empty(shape, device=device).exponential_(generator=generator).log()


class MaskGitDecodingMixin:
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
            generator (`torch.Generator`, *optional*): source of randomness (else `seed`, else global).

        Returns:
            `torch.LongTensor` of shape `(batch, levels, frames)`, or a [`SoundStormGenerateOutput`] with the
            trace when `return_trace=True`. The number of forward passes is `sum(steps_per_level)`, whatever
            the length.
        """
        config = self.config
        generation_config = copy.deepcopy(generation_config or self.generation_config)
        unknown = generation_config.update(**kwargs)
        if unknown:
            raise TypeError(f"Unknown generation arguments: {sorted(unknown)}.")
        steps_per_level = generation_config.check(config.num_levels)
        device = self.device
        if generator is None and generation_config.seed is not None:
            generator = torch.Generator(device=device).manual_seed(generation_config.seed)

        semantic_ids = torch.as_tensor(semantic_ids, device=device)
        if semantic_ids.ndim != 2:
            raise ValueError(f"`semantic_ids` must have shape (batch, frames), got {tuple(semantic_ids.shape)}.")
        batch = semantic_ids.shape[0]
        num_frames = self._resolve_num_frames(semantic_ids, attention_mask, num_frames)
        frames = torch.arange(num_frames, device=device)
        lengths = self._row_lengths(attention_mask, batch, num_frames)  # (batch,)
        valid = frames < lengths[:, None]  # (batch, frames)

        mask_id = config.mask_token_id
        codes = torch.full((batch, config.num_levels, num_frames), mask_id, dtype=torch.long, device=device)
        prompt_lengths = self._place_prompt(codes, prompt_ids, prompt_lengths, lengths)
        in_prompt = frames < prompt_lengths[:, None]  # (batch, frames)
        self.model.check_inputs(semantic_ids, codes, valid.long())

        # The semantic embedding does not change across passes: computed once.
        semantic_embeds = self.model.embeddings.embed_semantic(semantic_ids, num_frames)  # (batch, frames, hidden)
        visible = valid
        guidance_scale = generation_config.guidance_scale or 1.0
        guided = guidance_scale != 1.0
        if guided:
            if not bool(in_prompt.any()) and not generation_config.guidance_drops_semantic:
                raise ValueError(
                    "Classifier-free guidance needs a condition to drop: pass `prompt_ids` or set "
                    "`guidance_drops_semantic=True`."
                )
            unconditional_embeds = semantic_embeds
            if generation_config.guidance_drops_semantic:
                null_ids = torch.full_like(semantic_ids, config.semantic_null_id)
                unconditional_embeds = self.model.embeddings.embed_semantic(null_ids, num_frames)
            # Conditional and unconditional rows share one forward; the latter does not see the prompt.
            semantic_embeds = torch.cat([semantic_embeds, unconditional_embeds])
            visible = torch.cat([valid, valid & ~in_prompt])
        attention_mask = None if bool(visible.all()) else visible.long()

        trace = torch.full_like(codes, -1)
        to_generate = valid & ~in_prompt  # (batch, frames): the same positions on every level
        num_to_generate = to_generate.sum(dim=1)  # (batch,)
        forward_pass = 0
        for level, num_steps in enumerate(steps_per_level):
            for step in range(num_steps):
                model_codes = torch.cat([codes, codes]) if guided else codes
                # No reference to the pass's output outlives this line: a CUDA-graph replay may reuse its memory.
                logits = self.level_logits(
                    self.model(
                        acoustic_ids=model_codes, attention_mask=attention_mask, semantic_embeds=semantic_embeds
                    ).last_hidden_state,
                    level,
                ).float()  # (batch[*2], frames, vocab)
                if guided:
                    conditional, unconditional = logits.chunk(2)
                    logits = unconditional + guidance_scale * (conditional - unconditional)

                still_masked = valid & (codes[:, level] == mask_id)  # (batch, frames)
                greedy = not generation_config.do_sample or (
                    generation_config.greedy_last_iteration and step == num_steps - 1
                )
                tokens, confidence = self._sample(logits, step / num_steps, greedy, generation_config, generator)

                # Rank only this level's still-masked positions; the least confident `keep` stay masked.
                schedule = MASK_SCHEDULES[generation_config.mask_schedule]((step + 1) / num_steps)
                keep = (num_to_generate * schedule).floor().long()
                keep = torch.minimum(keep, still_masked.sum(dim=1) - 1).clamp(min=0)  # fix >= 1 token per pass
                confidence = confidence.masked_fill(~still_masked, float("inf"))
                # Rank of each position (0 = least confident): one sort, then its inverse permutation.
                order = confidence.argsort(dim=1)
                rank = torch.empty_like(order).scatter_(1, order, frames.expand_as(order))
                fixed = still_masked & (rank >= keep[:, None])

                codes[:, level] = torch.where(fixed, tokens, codes[:, level])
                trace[:, level] = torch.where(fixed, forward_pass, trace[:, level])
                forward_pass += 1

        if generation_config.return_trace or generation_config.return_dict_in_generate:
            return SoundStormGenerateOutput(sequences=codes, trace=trace)
        return codes

    def generate_long(
        self,
        semantic_ids: torch.LongTensor,
        prompt_ids: torch.LongTensor | None = None,
        prompt_semantic_ids: torch.LongTensor | None = None,
        context_frames: int = 150,
        **kwargs,
    ) -> torch.LongTensor:
        r"""
        Codes of one sequence of any length, generated in windows of at most `max_frames` frames.

        Each window is prompted by the last `context_frames` of what comes before it (the voice prompt, then the
        previous window's output) and fills the rest with new frames, as the paper does for long audio; memory
        stays that of one window and time grows linearly with length. Windows start on semantic-token boundaries
        so that both streams stay aligned.

        Args:
            semantic_ids (`torch.LongTensor` of shape `(semantic_frames,)`): content of the new audio only.
            prompt_ids (`torch.LongTensor` of shape `(levels, prompt_frames)`, *optional*): voice prompt codes.
            prompt_semantic_ids (`torch.LongTensor` of shape `(prompt_semantic_frames,)`, *optional*): the
                prompt's semantic tokens, aligned to `prompt_ids`.
            context_frames (`int`): frames of context prompting each window (at most half a window).
            kwargs: passed to `generate` for every window (e.g. `seed`, `temperature`).

        Returns:
            `torch.LongTensor` of shape `(levels, frames)`: the new frames only.
        """
        config = self.config
        ratio = config.semantic_upsampling
        step, tokens_per_step = ratio.numerator, ratio.denominator  # frames / semantic tokens per aligned unit
        device = self.device
        semantic_ids = torch.as_tensor(semantic_ids, device=device)
        if semantic_ids.ndim != 1:
            raise ValueError(f"`semantic_ids` must have shape (semantic_frames,), got {tuple(semantic_ids.shape)}.")
        if (prompt_ids is None) != (prompt_semantic_ids is None):
            raise ValueError("Pass `prompt_ids` and `prompt_semantic_ids` together.")
        total_units = semantic_ids.shape[0] // tokens_per_step
        max_units = config.max_frames // step
        if total_units == 0:
            raise ValueError("Nothing to generate: `semantic_ids` covers no whole acoustic frame.")
        if max_units < 2:
            raise ValueError(f"`max_frames` ({config.max_frames}) cannot hold a context and new frames of {step}.")
        context_units = max(1, min(context_frames // step, max_units // 2))

        history = torch.empty(config.num_levels, 0, dtype=torch.long, device=device)  # (levels, frames)
        history_semantic = semantic_ids[:0]
        if prompt_ids is not None:
            history = torch.as_tensor(prompt_ids, device=device)
            history_semantic = torch.as_tensor(prompt_semantic_ids, device=device)
            if history.ndim != 2 or history_semantic.ndim != 1:
                raise ValueError("`prompt_ids` must be (levels, frames) and `prompt_semantic_ids` (semantic_frames,).")
            if history.shape[-1] * tokens_per_step != history_semantic.shape[0] * step:
                raise ValueError(
                    f"The prompt's {history.shape[-1]} frames and {history_semantic.shape[0]} semantic tokens are not "
                    "aligned: cut both to whole semantic units."
                )
        windows, done_units = [], 0
        while done_units < total_units:
            context = min(history.shape[-1] // step, context_units)
            new_units = min(max_units - context, total_units - done_units)
            window_semantic = torch.cat(
                [
                    history_semantic[history_semantic.shape[0] - context * tokens_per_step :],
                    semantic_ids[done_units * tokens_per_step : (done_units + new_units) * tokens_per_step],
                ]
            )
            prompt = history[None, :, history.shape[-1] - context * step :] if context else None
            codes = self.generate(
                window_semantic[None], prompt_ids=prompt, num_frames=(context + new_units) * step, **kwargs
            )
            codes = codes.sequences if isinstance(codes, SoundStormGenerateOutput) else codes
            history, history_semantic = codes[0, :, context * step :], window_semantic[context * tokens_per_step :]
            windows.append(history)
            done_units += new_units
        return torch.cat(windows, dim=-1)

    def _resolve_num_frames(self, semantic_ids, attention_mask, num_frames) -> int:
        if num_frames is None and attention_mask is not None:
            num_frames = attention_mask.shape[-1]
        if num_frames is None:
            ratio = self.config.semantic_upsampling
            if semantic_ids.shape[1] % ratio.denominator:
                raise ValueError(
                    f"{semantic_ids.shape[1]} semantic tokens do not fill whole acoustic frames "
                    f"({ratio.denominator} tokens per frame)."
                )
            num_frames = semantic_ids.shape[1] * ratio.numerator // ratio.denominator
        if num_frames < 1:
            raise ValueError("Nothing to generate: the sequence is empty (0 frames).")
        return int(num_frames)

    def _row_lengths(self, attention_mask, batch: int, num_frames: int) -> torch.Tensor:
        """Frames per row from a right-padded `attention_mask` (batch, frames)."""
        device = self.device
        if attention_mask is None:
            return torch.full((batch,), num_frames, device=device)
        attention_mask = torch.as_tensor(attention_mask, device=device)
        if attention_mask.shape != (batch, num_frames):
            raise ValueError(
                f"`attention_mask` must have shape (batch, frames) = {(batch, num_frames)}, "
                f"got {tuple(attention_mask.shape)}."
            )
        lengths = attention_mask.long().sum(dim=1)
        if not torch.equal(attention_mask.bool(), torch.arange(num_frames, device=device) < lengths[:, None]):
            raise ValueError("`attention_mask` must be 1 on each row's first frames and 0 after (right padding).")
        if bool((lengths == 0).any()):
            raise ValueError("A row of `attention_mask` is empty (0 frames).")
        return lengths

    def _place_prompt(self, codes, prompt_ids, prompt_lengths, lengths) -> torch.Tensor:
        """Writes each row's prompt into `codes` (batch, levels, frames); returns the prompt lengths (batch,)."""
        batch, num_levels, num_frames = codes.shape
        if prompt_ids is None:
            if prompt_lengths is not None:
                raise ValueError("`prompt_lengths` was given without `prompt_ids`.")
            return torch.zeros(batch, dtype=torch.long, device=codes.device)
        prompt_ids = torch.as_tensor(prompt_ids, device=codes.device)
        if prompt_ids.ndim != 3 or prompt_ids.shape[:2] != (batch, num_levels):
            raise ValueError(
                f"`prompt_ids` must have shape (batch={batch}, levels={num_levels}, prompt_frames), "
                f"got {tuple(prompt_ids.shape)}."
            )
        prompt_frames = prompt_ids.shape[-1]
        if prompt_lengths is None:
            prompt_lengths = torch.full((batch,), prompt_frames, device=codes.device)
        prompt_lengths = torch.as_tensor(prompt_lengths, device=codes.device).long()
        if prompt_lengths.shape != (batch,) or bool((prompt_lengths < 0).any() | (prompt_lengths > prompt_frames).any()):
            raise ValueError(f"`prompt_lengths` must be {batch} values in [0, {prompt_frames}].")
        too_long = prompt_lengths > lengths
        if bool(too_long.any()):
            row = int(too_long.nonzero()[0])
            raise ValueError(
                f"The prompt of row {row} ({int(prompt_lengths[row])} frames) is longer than its sequence "
                f"({int(lengths[row])} frames)."
            )
        in_prompt = torch.arange(prompt_frames, device=codes.device) < prompt_lengths[:, None]  # (batch, prompt)
        prompt_tokens = prompt_ids[in_prompt[:, None, :].expand_as(prompt_ids)]
        if prompt_tokens.numel() and (int(prompt_tokens.min()) < 0 or int(prompt_tokens.max()) >= self.config.codebook_size):
            raise ValueError(
                f"`prompt_ids` holds codes outside [0, codebook_size={self.config.codebook_size})."
            )
        codes[..., :prompt_frames] = torch.where(in_prompt[:, None, :], prompt_ids, codes[..., :prompt_frames])
        return prompt_lengths

    @staticmethod
    def _sample(logits, progress: float, greedy: bool, generation_config, generator):
        """Tokens (batch, frames) and their confidences (log-probability plus annealed Gumbel noise)."""
        log_probs = logits.log_softmax(dim=-1)  # (batch, frames, vocab)
        temperature = (generation_config.temperature or 0.0) * ANNEALINGS[generation_config.temperature_annealing](
            progress
        )
        if greedy or temperature <= 0:
            tokens = logits.argmax(dim=-1)
        else:
            filtered = filter_logits(logits / temperature, generation_config.top_k, generation_config.top_p)
            probs = filtered.softmax(dim=-1).flatten(0, 1)  # (batch * frames, vocab)
            tokens = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
        confidence = log_probs.gather(-1, tokens[..., None]).squeeze(-1)
        choice_temperature = generation_config.choice_temperature * ANNEALINGS[
            generation_config.choice_temperature_annealing
        ](progress)
        if choice_temperature > 0:
            confidence = confidence + choice_temperature * gumbel_noise(confidence.shape, generator, logits.device)
        return tokens, confidence
