"""Text-to-semantic (T2S): a small `LlamaForCausalLM` that writes SoundStorm's semantic tokens for a text.

One vocabulary holds both streams: the phoneme tokenizer's ids (its special tokens first) and, from
`config.semantic_offset` on, the semantic ids. A training sequence is `[phonemes | <sep> | semantic | </s>]` with the
loss on the semantic part and `</s>` only; generation is transformers' own `generate` on `[phonemes | <sep>]`, with
`SemanticOnlyLogitsProcessor` so that it can only continue with semantic ids and stop with `</s>`. The semantic
ids keep their frame rate (repeats included), because SoundStorm aligns them to acoustic frames by rate.

An undertrained model may never say `</s>` and loop instead, so decoding has two guards, both saved in the
folder's `generation_config.json`: a length prior (`seconds_per_text_token`: the output lasts between `low` and
`high` seconds per phoneme symbol, enforced with transformers' `min_new_tokens` / `max_new_tokens`), and
`RepeatingLoopCriteria`, which stops a row whose last `loop_seconds` are one short pattern over and over (the loop is
cut off). Token-level repetition penalties (`repetition_penalty`, `no_repeat_ngram_size`) are not used by default:
semantic ids at frame rate repeat by nature (a long vowel, a pause), and banning repeats would distort durations.

    t2s = TextToSemantic.from_pretrained("model/t2s")
    semantic_ids = t2s.generate(["Hello there."], temperature=0.8)[0]  # LongTensor (frames,)
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
    StoppingCriteria,
    StoppingCriteriaList,
)

from .phonemes import CLAUSE_BREAK, phonemize

logger = logging.getLogger(__name__)
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "sep_token": "<sep>", "eos_token": "</s>"}
# Model sizes; `config_overrides` changes any field.
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4),
}
# Length prior of a model saved without one: seconds of speech per phoneme symbol (spaces and clause breaks
# included). Real read speech takes 0.054-0.080 s (pocketsphinx-testdata's LibriVox clips, Asterisk's English
# prompts); the range allows about half the fastest to twice the slowest.
SECONDS_PER_TEXT_TOKEN = (0.03, 0.15)
# Training data sets the prior from its own rates: their 1st to 99th percentile, widened by this factor each way.
LENGTH_PRIOR_MARGIN = 1.25
# A row whose last `LOOP_SECONDS` of semantic ids repeat one pattern of at most a third of that is stopped: natural
# speech never repeats exactly for that long (a held pause is the one exception, and one of a second ends a sentence).
LOOP_SECONDS = 1.0
# Fewest semantic ids a row may have: SoundStorm needs at least one alignment unit.
MIN_FRAMES = 2


def build_tokenizer(phoneme_strings: Iterable[str]) -> PreTrainedTokenizerFast:
    """A one-symbol-per-token tokenizer (`tokenizers` WordLevel) over the symbols of `phoneme_strings`.

    Symbols never seen in training become `<unk>`: the model could not have learned them anyway.
    """
    symbols = sorted(set(itertools.chain.from_iterable(phoneme_strings)) | {" ", CLAUSE_BREAK})
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS.values(), *symbols])}
    backend = Tokenizer(WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per code point
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build_config(
    tokenizer: PreTrainedTokenizerFast,
    semantic_vocab_size: int,
    semantic_frame_rate: float,
    preset: str = "small",
    language: str = "en-us",
    **overrides,
) -> LlamaConfig:
    """The config of a T2S model over `tokenizer`'s ids followed by `semantic_vocab_size` semantic ids.

    `semantic_frame_rate` is recorded so that a pipeline can check that it matches its SoundStorm model, `language`
    is the espeak-ng voice the text is phonemized with.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown T2S preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    offset = len(tokenizer)
    settings = dict(
        vocab_size=offset + semantic_vocab_size,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        semantic_offset=offset,
        semantic_vocab_size=semantic_vocab_size,
        semantic_frame_rate=semantic_frame_rate,
        phoneme_language=language,
    )
    return LlamaConfig(**{**settings, **PRESETS[preset], **overrides})


def sequence(config: LlamaConfig, text_ids: list[int], semantic_ids: Iterable[int] = ()) -> tuple[list[int], list[int]]:
    """`[text | <sep> | semantic + offset | </s>]` and its labels (-100 on the text and `<sep>`).

    Without `semantic_ids`: the generation prompt `[text | <sep>]` (and labels that are all -100).
    """
    prompt = [*text_ids, config.sep_token_id]
    semantic = [config.semantic_offset + int(index) for index in semantic_ids]
    target = [*semantic, config.eos_token_id] if semantic else []
    return prompt + target, [-100] * len(prompt) + target


class SemanticOnlyLogitsProcessor(LogitsProcessor):
    """Masks every id but the semantic ones and `</s>`, so that generation after `<sep>` never emits text."""

    def __init__(self, config: LlamaConfig):
        allowed = torch.zeros(config.vocab_size, dtype=torch.bool)
        allowed[config.semantic_offset :] = True
        allowed[config.eos_token_id] = True
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(~self.allowed.to(scores.device), float("-inf"))


class TextToSemantic:
    """A T2S model with its tokenizer: text in, semantic ids out. Saved as one folder (model, generation config and
    tokenizer files side by side), so `LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` read it
    too."""

    def __init__(self, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast):
        config = model.config
        if config.semantic_offset != len(tokenizer):
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} ids but the model's semantic ids start at {config.semantic_offset}."
            )
        self.model, self.tokenizer = model.eval(), tokenizer

    @classmethod
    def from_pretrained(cls, path: str | Path, **model_kwargs) -> TextToSemantic:
        return cls(LlamaForCausalLM.from_pretrained(path, **model_kwargs), PreTrainedTokenizerFast.from_pretrained(path))

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def to(self, device) -> TextToSemantic:
        if device is not None:
            self.model.to(device)
        return self

    @property
    def config(self) -> LlamaConfig:
        return self.model.config

    def text_ids(self, text: str) -> list[int]:
        """Token ids of `text`'s phonemes; symbols the tokenizer does not know are logged and become `<unk>`."""
        phonemes = phonemize(text, self.config.phoneme_language)
        ids = self.tokenizer(phonemes, add_special_tokens=False).input_ids
        if self.tokenizer.unk_token_id in ids:
            unknown = sorted({symbol for symbol in phonemes if symbol not in self.tokenizer.get_vocab()})
            logger.warning("Phonemes unknown to the T2S tokenizer, read as <unk>: %s (in %r)", " ".join(unknown), text[:40])
        return ids

    def length_bounds(self, num_text_tokens: int) -> tuple[int, int]:
        """Fewest and most semantic ids for a text of `num_text_tokens` phoneme symbols (the length prior)."""
        low, high = getattr(self.model.generation_config, "seconds_per_text_token", None) or SECONDS_PER_TEXT_TOKEN
        rate = self.config.semantic_frame_rate
        shortest, longest = math.floor(num_text_tokens * low * rate), math.ceil(num_text_tokens * high * rate)
        return max(MIN_FRAMES, shortest), max(MIN_FRAMES, longest)

    @torch.no_grad()
    def generate(
        self, texts: str | list[str], seed: int | None = None, max_frames: int | None = None, **generate_kwargs
    ) -> list[torch.LongTensor]:
        """Semantic ids `(frames,)` for each text, from transformers' `generate`, one text at a time (each has its
        own length bounds).

        Sampling follows the saved `generation_config` unless `generate_kwargs` say otherwise (`do_sample=False`
        for greedy, `temperature`, `top_k`, `top_p`, ...); `seed` makes it repeatable without touching the global
        random state. A row ends at `</s>`, which cannot come before the length prior's lower bound; without it, at
        the prior's upper bound (or `max_frames`, when lower), or where it starts looping; both are logged.
        """
        texts = [texts] if isinstance(texts, str) else texts
        text_ids = [self.text_ids(text) for text in texts]  # every text is checked before anything is generated
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            return [self._generate_one(text, ids, max_frames, generate_kwargs) for text, ids in zip(texts, text_ids)]

    def _generate_one(
        self, text: str, text_ids: list[int], max_frames: int | None, generate_kwargs: dict
    ) -> torch.LongTensor:
        low, high = self.length_bounds(len(text_ids))
        if max_frames is not None:
            high, low = min(high, max_frames), min(low, max_frames)
        prompt = torch.tensor([sequence(self.config, text_ids)[0]], device=self.model.device)
        loop = RepeatingLoopCriteria(round(self._loop_seconds * self.config.semantic_frame_rate), prompt.shape[1])
        output = self.model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            logits_processor=LogitsProcessorList([SemanticOnlyLogitsProcessor(self.config)]),
            stopping_criteria=StoppingCriteriaList([loop]),
            min_new_tokens=low,
            max_new_tokens=high + 1,  # room for `</s>` after `high` semantic ids
            **generate_kwargs,
        )
        row = output[0, prompt.shape[1] :].cpu()
        stops = (row == self.config.eos_token_id).nonzero()
        if len(stops):
            return row[: int(stops[0])] - self.config.semantic_offset
        looped = loop.loop_start(row)
        if looped is not None:
            logger.warning("The T2S model looped on %r after %d frames; cut there.", text[:40], looped)
            row = row[: max(looped, MIN_FRAMES)]
        else:
            logger.warning("The T2S model did not end %r within %d frames; cut there.", text[:40], high)
            row = row[:high]
        return row - self.config.semantic_offset

    @property
    def _loop_seconds(self) -> float:
        return getattr(self.model.generation_config, "loop_seconds", None) or LOOP_SECONDS


class RepeatingLoopCriteria(StoppingCriteria):
    """Stops a row once its last `window` generated ids are one pattern of at most `window // 3` ids, repeated.

    `loop_start` says where such a loop began in a finished row, so that only its first period is kept.
    """

    def __init__(self, window: int, prompt_length: int):
        self.window, self.prompt_length = max(window, 3), prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        looping = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if input_ids.shape[1] - self.prompt_length < self.window:
            return looping
        tail = input_ids[:, -self.window :]  # (batch, window)
        for period in range(1, self.window // 3 + 1):
            looping |= (tail[:, period:] == tail[:, :-period]).all(dim=1)
        return looping

    def loop_start(self, generated: torch.LongTensor) -> int | None:
        """The end of the first period of the loop that `generated` `(ids,)` ends with, or None without one."""
        if len(generated) < self.window:
            return None
        tail = generated[-self.window :]
        for period in range(1, self.window // 3 + 1):
            if torch.equal(tail[period:], tail[:-period]):
                start = len(generated) - self.window
                while start > 0 and generated[start - 1] == generated[start - 1 + period]:
                    start -= 1
                return start + period
        return None


def default_generation_config(
    config: LlamaConfig, seconds_per_text_token: tuple[float, float] = SECONDS_PER_TEXT_TOKEN
) -> GenerationConfig:
    """Decoding settings saved with a trained T2S model (`generation_config.json`): sampling, and the length prior
    and loop window that `TextToSemantic.generate` reads (unknown to transformers, which keeps them as they are)."""
    return GenerationConfig(
        do_sample=True, temperature=0.8, top_k=50, top_p=0.95,
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
        seconds_per_text_token=[float(bound) for bound in seconds_per_text_token], loop_seconds=LOOP_SECONDS,
    )


def learn_length_prior(seconds: list[float], num_text_tokens: list[int]) -> tuple[float, float]:
    """The length prior of a corpus: its utterances' 1st to 99th percentile of seconds per phoneme symbol, widened
    by `LENGTH_PRIOR_MARGIN` each way."""
    rates = [duration / count for duration, count in zip(seconds, num_text_tokens) if count]
    if not rates:
        return SECONDS_PER_TEXT_TOKEN
    low, high = torch.tensor(rates, dtype=torch.float64).quantile(torch.tensor([0.01, 0.99], dtype=torch.float64)).tolist()
    return low / LENGTH_PRIOR_MARGIN, high * LENGTH_PRIOR_MARGIN
