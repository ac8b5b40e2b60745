"""What `training/train.py --task t2s` swaps into its loop to train the text-to-semantic model.

train.py keeps everything else (Accelerate, batches grouped by length, checkpoints and resume, divergence and signal
stops, logging, the progress bar); this module supplies the T2S model and config, the rows (`text` phonemized into
`text_ids`, next to the token dataset's `semantic_ids`), the batches, the held-out metrics, the samples and the saved
folder. It reads the same token datasets as SoundStorm training: `prepare_dataset.py` keeps the `text` column.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .phonemes import phonemize
from .t2s import TextToSemantic, build_config, build_tokenizer, default_generation_config, learn_length_prior, sequence

logger = logging.getLogger(__name__)
# The loader's columns; `acoustic_ids` only for train.py's count of audio frames trained on per second.
COLUMNS = ["text_ids", "semantic_ids", "acoustic_ids"]
# What a checkpoint must share with the run resuming it.
CHECKED_CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "semantic_offset", "semantic_vocab_size", "semantic_frame_rate", "phoneme_language",
)


def phonemize_all(texts: list[str], language: str) -> dict[str, str]:
    """`{text: phonemes}`, four espeak-ng processes at a time."""
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(texts, pool.map(lambda text: phonemize(text, language), texts)))


class T2SDataCollator:
    """Rows `{"text_ids", "semantic_ids"}` -> right-padded `input_ids`, `attention_mask`, `labels` (`sequence`)."""

    def __init__(self, config: LlamaConfig):
        self.config = config

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        pairs = [sequence(self.config, row["text_ids"].tolist(), row["semantic_ids"].tolist()) for row in rows]
        width = max(len(ids) for ids, _ in pairs)
        pad = self.config.pad_token_id
        return {
            "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in pairs]),
            "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in pairs]),
            "labels": torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in pairs]),
        }


class T2STraining:
    """The T2S side of a training run: tokenizer and config (new, from the dataset's texts and token grid, or those
    of `model_name_or_path`), the length prior of the dataset's speech rates (held-out rows split off it later
    included), the rows with their `text_ids`, the
    model, and what is evaluated and saved."""

    def __init__(self, dataset: datasets.Dataset, info, model_name_or_path: str | None, preset: str, overrides: dict,
                 max_frames: int):
        if "text" not in dataset.column_names:
            raise ValueError("T2S training needs a `text` column: prepare the dataset from transcribed speech.")
        self.model_name_or_path, self.max_frames = model_name_or_path, max_frames
        texts = sorted({text for text in dataset["text"] if text and text.strip()})
        if model_name_or_path:
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model_name_or_path)
            self.config = LlamaConfig.from_pretrained(model_name_or_path, **overrides)
            self.phonemes = phonemize_all(texts, self.config.phoneme_language)
        else:
            self.phonemes = phonemize_all(texts, "en-us")
            self.tokenizer = build_tokenizer(self.phonemes.values())
            self.config = build_config(
                self.tokenizer, info.semantic_vocab_size, info.semantic_frame_rate, preset, "en-us", **overrides
            )
        self.check(info)
        rows = [(text, len(ids)) for text, ids in zip(dataset["text"], dataset["semantic_ids"]) if text in self.phonemes]
        self.seconds_per_text_token = learn_length_prior(
            [frames / self.config.semantic_frame_rate for _, frames in rows], [len(self.phonemes[text]) for text, _ in rows]
        )
        logger.info("Length prior: %.3f-%.3f s per phoneme symbol", *self.seconds_per_text_token)

    def check(self, info) -> None:
        """Refuse a token dataset whose semantic tokens are not the model's."""
        if (info.semantic_vocab_size, info.semantic_frame_rate) != (self.config.semantic_vocab_size, self.config.semantic_frame_rate):
            raise ValueError(
                f"The dataset's semantic tokens ({info.semantic_vocab_size} ids at {info.semantic_frame_rate} Hz) are not "
                f"the T2S model's ({self.config.semantic_vocab_size} at {self.config.semantic_frame_rate} Hz)."
            )

    def rows(self, dataset: datasets.Dataset, name: str) -> datasets.Dataset:
        """`dataset` with `text_ids`, without rows that have no text or are longer than `max_frames` acoustic frames
        (a text cannot be cut where the audio is cropped)."""
        keep = [
            index for index, (text, frames) in enumerate(zip(dataset["text"], dataset["num_frames"]))
            if text and text.strip() and frames <= self.max_frames
        ]
        if len(keep) < len(dataset):
            logger.warning("%s: %d of %d rows have no text or more than %d frames; left out", name, len(dataset) - len(keep), len(dataset), self.max_frames)
        missing = sorted({text for text in dataset.select(keep)["text"] if text not in self.phonemes})
        self.phonemes.update(phonemize_all(missing, self.config.phoneme_language))
        return dataset.select(keep).map(
            lambda row: {"text_ids": self.tokenizer(self.phonemes[row["text"]], add_special_tokens=False).input_ids},
            desc=f"phonemes ({name})",
        )

    def model(self) -> LlamaForCausalLM:
        if self.model_name_or_path:
            return LlamaForCausalLM.from_pretrained(self.model_name_or_path, config=self.config)
        return LlamaForCausalLM(self.config)

    def collator(self) -> T2SDataCollator:
        return T2SDataCollator(self.config)

    @torch.no_grad()
    def evaluate(self, model, loader, accelerator, collator: T2SDataCollator, seed: int) -> dict[str, float]:
        """Teacher-forced loss and next-token accuracy on the held-out semantic ids and `</s>` (`seed`: unused,
        the batches have no randomness; the argument matches SoundStorm's evaluation)."""
        model.eval()
        totals = torch.zeros(3, device=accelerator.device)  # loss sum, correct, targets
        for rows in loader:
            batch = {key: value.to(accelerator.device) for key, value in collator(rows).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            scored = labels != -100
            totals[0] += torch.nn.functional.cross_entropy(logits[scored], labels[scored], reduction="sum")
            totals[1] += (logits.argmax(-1)[scored] == labels[scored]).sum()
            totals[2] += scored.sum()
        totals = accelerator.reduce(totals, reduction="sum").cpu()
        model.train()
        return {"eval/loss": (totals[0] / totals[2]).item(), "eval/accuracy": (totals[1] / totals[2]).item()}

    def sample_writer(self, rows: datasets.Dataset, output_dir: str):
        """`samples(accelerator, model, step)`: greedy semantic ids for a few held-out texts, next to the reference
        ones, in `samples/step-<step>/t2s.json` (their lengths say whether durations are learned)."""
        examples = [(row["text"], row["semantic_ids"]) for row in rows]

        def samples(accelerator, model, step: int) -> None:
            if not examples or not accelerator.is_main_process:
                return
            t2s = TextToSemantic(accelerator.unwrap_model(model), self.tokenizer)
            generated = t2s.generate([text for text, _ in examples], do_sample=False)
            model.train()
            folder = Path(output_dir) / "samples" / f"step-{step}"
            folder.mkdir(parents=True, exist_ok=True)
            records = [
                {"text": text, "reference": list(reference), "generated": ids.tolist()}
                for (text, reference), ids in zip(examples, generated)
            ]
            (folder / "t2s.json").write_text(json.dumps(records) + "\n")

        return samples

    def save(self, output_dir: Path, model: LlamaForCausalLM, state_dict: dict) -> None:
        """The model folder `TextToSemantic.from_pretrained` reads: weights, config, decoding settings (with the
        dataset's length prior), tokenizer."""
        model.generation_config = default_generation_config(self.config, self.seconds_per_text_token)
        model.save_pretrained(output_dir, state_dict=state_dict)
        self.tokenizer.save_pretrained(output_dir)
