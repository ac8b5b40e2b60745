"""Settings of SoundStorm's decoder and their checks: every bad value is refused, naming it, before any work."""

import math
import warnings

from transformers import GenerationConfig
from transformers.utils import GENERATION_CONFIG_NAME, cached_file

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
# The fields of transformers' `GenerationConfig` that the decoder reads. The others (`num_beams`, `max_new_tokens`,
# `repetition_penalty`, `min_p`, ...) belong to autoregressive decoding: setting one is refused, never ignored.
DECODER_FIELDS = frozenset({"do_sample", "temperature", "top_k", "top_p", "guidance_scale", "return_dict_in_generate"})
METADATA_FIELDS = frozenset({"transformers_version", "_from_model_config"})
UNUSED_FIELDS = frozenset(GenerationConfig().to_dict()) - DECODER_FIELDS - METADATA_FIELDS


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
            takes the argmax everywhere and decodes deterministically (no noise on the confidences either).
        temperature (`float`, defaults to 1.0): sampling temperature of token predictions; 0 is the argmax and
            decodes deterministically, as `do_sample=False` does.
        temperature_annealing (`str`, defaults to `"none"`): decay of the temperature over a level's
            iterations: `"none"`, `"linear"` or `"cosine"`.
        top_k (`int`, defaults to `None`), top_p (`float`, defaults to `None`): restrict sampling to the k most likely
            tokens / the smallest set holding probability p (transformers' `TopKLogitsWarper` / `TopPLogitsWarper`).
        choice_temperature (`float`, defaults to 1.0): scale of the Gumbel noise added, when sampling, to the
            confidences that decide which tokens are kept (MaskGIT); 0 ranks by confidence alone.
        choice_temperature_annealing (`str`, defaults to `"linear"`): its decay over a level's iterations.
        greedy_last_iteration (`bool`, defaults to `True`): take the argmax on each level's last iteration,
            hence on every level with a single iteration, as the paper does.
        guidance_scale (`float`, defaults to 1.0): classifier-free guidance. Other than 1, each pass also runs an
            unconditional copy of the batch (prompt hidden, and the semantics too if `guidance_drops_semantic`) in the
            same forward, and logits become `u + scale * (c - u)`: 0 is the unconditional model. Meaningful only for a
            model trained with `prompt_dropout` (see `SoundStormConfig.trained_for_guidance`).
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

    @property
    def is_deterministic(self) -> bool:
        """Whether decoding draws nothing at random: `do_sample=False` or `temperature=0`."""
        return not self.do_sample or not self.temperature

    def iterations_per_level(self, num_levels: int) -> list[int]:
        """`steps_per_level`, or the paper's schedule for `num_levels` when unset."""
        return [int(s) for s in self.steps_per_level or [16] + [1] * (num_levels - 1)]

    def validate(
        self, strict: bool = False, user_set_attributes: set[str] | None = None, num_levels: int | None = None
    ):
        """Checks the settings (for a model of `num_levels` when given); replaces transformers' checks, which are about
        autoregressive decoding.

        A bad value is a `ValueError` or `TypeError` naming the setting. A field of transformers' config that this
        decoder does not use (`num_beams`, `max_new_tokens`, ...) set to anything (among `user_set_attributes`, when
        given) is a `ValueError` with `strict` and a one-line warning without."""
        steps = self.steps_per_level
        if steps is not None and (
            not isinstance(steps, (list, tuple))
            or (num_levels is not None and len(steps) != num_levels)
            or any(not is_integer(s) or s < 1 for s in steps)
        ):
            expected = "positive integers" if num_levels is None else f"{num_levels} positive integers"
            raise ValueError(f"`steps_per_level` must list {expected}, got {steps}.")
        for name, value, choices in (
            ("mask_schedule", self.mask_schedule, MASK_SCHEDULES),
            ("temperature_annealing", self.temperature_annealing, ANNEALINGS),
            ("choice_temperature_annealing", self.choice_temperature_annealing, ANNEALINGS),
        ):
            if value not in choices:
                raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")
        for name in ("temperature", "choice_temperature", "guidance_scale"):
            value = getattr(self, name)
            if name == "temperature" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0.0, got {value!r}.")
        if self.top_k is not None and (not is_integer(self.top_k) or self.top_k < 1):
            raise TypeError(f"`top_k` must be a positive integer, got {self.top_k!r}.")
        if self.top_p is not None and (
            isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1
        ):
            raise ValueError(f"`top_p` must be a number in (0, 1], got {self.top_p!r}.")
        if self.seed is not None and not is_integer(self.seed):
            raise TypeError(f"`seed` must be an integer, got {self.seed!r}.")

        candidates = UNUSED_FIELDS if user_set_attributes is None else UNUSED_FIELDS & set(user_set_attributes)
        unused = sorted(name for name in candidates if getattr(self, name, None) is not None)
        if unused:
            message = (
                f"SoundStorm's decoder does not use {', '.join(f'`{name}`' for name in unused)} (autoregressive "
                "settings of transformers' GenerationConfig): remove them."
            )
            if strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)


def is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
