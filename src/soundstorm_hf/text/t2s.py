"""Text-to-semantic (T2S): a small `LlamaForCausalLM` that writes SoundStorm's semantic tokens for a text.

One vocabulary holds both streams: the phoneme tokenizer's ids (its special tokens first) and, from
`config.semantic_offset` on, the semantic ids. A training sequence is `[phonemes | <sep> | semantic | </s>]` with the
loss on the semantic part and `</s>` only; generation is transformers' own `generate` on `[phonemes | <sep>]`, with
`SemanticOnlyLogitsProcessor` so that it can only continue with semantic ids and stop with `</s>`. The semantic
ids keep their frame rate (repeats included), because SoundStorm aligns them to acoustic frames by rate.

    t2s = TextToSemantic.from_pretrained("model/t2s")
    semantic_ids = t2s.generate(["Hello there."], temperature=0.8)[0]  # LongTensor (frames,)
"""

from __future__ import annotations

import itertools
import logging
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
)

from .phonemes import CLAUSE_BREAK, phonemize

logger = logging.getLogger(__name__)
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "sep_token": "<sep>", "eos_token": "</s>"}
# Model sizes; `config_overrides` changes any field.
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4),
}
# Generation stops here at the latest: far above speech's rate of semantic frames per phoneme symbol (about 1-2).
MAX_FRAMES_PER_TEXT_TOKEN = 6


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

    @torch.no_grad()
    def generate(
        self, texts: str | list[str], seed: int | None = None, max_frames: int | None = None, **generate_kwargs
    ) -> list[torch.LongTensor]:
        """Semantic ids `(frames,)` for each text, from transformers' `generate` on a left-padded batch.

        Sampling follows the saved `generation_config` unless `generate_kwargs` say otherwise (`do_sample=False`
        for greedy, `temperature`, `top_k`, `top_p`, ...); `seed` makes it repeatable without touching the global
        random state. A row stops at `</s>`, or after `max_frames` (default `MAX_FRAMES_PER_TEXT_TOKEN` per text
        token), which is logged.
        """
        texts = [texts] if isinstance(texts, str) else texts
        prompts = [sequence(self.config, self.text_ids(text))[0] for text in texts]
        width = max(len(prompt) for prompt in prompts)
        pad = self.config.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        limit = max_frames or MAX_FRAMES_PER_TEXT_TOKEN * width
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                logits_processor=LogitsProcessorList([SemanticOnlyLogitsProcessor(self.config)]),
                max_new_tokens=limit + 1,
                min_new_tokens=2,  # SoundStorm needs at least one semantic unit
                **generate_kwargs,
            )
        results = []
        for text, row in zip(texts, output[:, width:].cpu()):
            stops = (row == self.config.eos_token_id).nonzero()
            if not len(stops):
                logger.warning("The T2S model did not end %r within %d frames; cut there.", text[:40], limit)
            end = int(stops[0]) if len(stops) else limit
            results.append(row[:end] - self.config.semantic_offset)
        return results


def default_generation_config(config: LlamaConfig) -> GenerationConfig:
    """Sampling settings saved with a trained T2S model (`generation_config.json`)."""
    return GenerationConfig(
        do_sample=True, temperature=0.8, top_k=50, top_p=0.95,
        pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
    )
