"""Audio in, audio out: semantic tokenizer -> SoundStorm -> codec decoder, in chunks so memory stays flat."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import torch

from .adapters import ADAPTER_INFO_NAME, weights_fingerprint
from .audio import AudioSource, atomic_output, frame_powers, speech_power, stream_waveform
from .modeling_soundstorm import SoundStormForConditionalGeneration
from .tokenizers import (
    AcousticCodec,
    MimiCodec,
    MimiSemanticTokenizer,
    SemanticTokenizer,
    load_acoustic_codec,
    load_semantic_tokenizer,
)
from .tokenizers.base import local_folder, local_path_or_hub_id

CODEC_SUBFOLDER = "codec"
SEMANTIC_SUBFOLDER = "semantic_tokenizer"
DEFAULT_MODEL_NAME = "default"  # `from_pretrained("default")`: the model bundled in the package, no network
BUNDLED_DEFAULT_MODEL = Path(__file__).parent / "default"
# Output level: peaks are bent down from the knee so that none exceeds the ceiling (16-bit files never clip).
OUTPUT_CEILING = 10 ** (-1 / 20)  # -1 dBFS
LIMITER_KNEE = 10 ** (-3 / 20)  # -3 dBFS
# An output whose peak stays below this is reported as silence (-60 dBFS): typically an undertrained model.
SILENT_OUTPUT_PEAK = 1e-3
# Loudness matching raises the output's level by at most this factor (20 dB): more would amplify near-silence.
MAX_LOUDNESS_GAIN = 10.0


def load_adapter(model: SoundStormForConditionalGeneration, adapter: str | Path, base_name: str | Path):
    """`model` with the LoRA adapter `adapter` (folder or Hub id) merged into its weights (no cost at inference).

    An adapter trained on another base is refused, naming both, since it would load without error and produce noise.
    """
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError("Loading an adapter needs peft: pip install 'soundstorm-hf[lora]'.") from error
    folder = local_path_or_hub_id(adapter, "adapter") or local_folder(adapter)
    info_path = folder / ADAPTER_INFO_NAME
    if not info_path.is_file():
        raise FileNotFoundError(
            f"adapter: {ADAPTER_INFO_NAME} missing in {folder}: not an adapter saved by `soundstorm-hf finetune` "
            "(or train.py --lora_rank)."
        )
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"adapter: {info_path} is not valid JSON ({error}).") from None
    missing = [key for key in ("base_model", "base_fingerprint") if not isinstance(info, dict) or key not in info]
    if missing:
        raise ValueError(f"adapter: {info_path} lacks {' and '.join(missing)}: not written by `soundstorm-hf finetune`.")
    if info["base_fingerprint"] != weights_fingerprint(model):
        raise ValueError(
            f"The adapter {adapter} was trained on the base model {info['base_model']}, not on {base_name} (their "
            f"weights differ): load it on {info['base_model']}."
        )
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Bend samples above `LIMITER_KNEE` smoothly (tanh) under `OUTPUT_CEILING`, in place; quieter ones are kept.

    Memoryless, so chunked decoding gives the same samples as decoding at once.
    """
    span = OUTPUT_CEILING - LIMITER_KNEE
    magnitude = np.abs(audio)
    loud = magnitude > LIMITER_KNEE
    audio[loud] = np.sign(audio[loud]) * (LIMITER_KNEE + span * np.tanh((magnitude[loud] - LIMITER_KNEE) / span))
    return audio


def check_compatible(model: SoundStormForConditionalGeneration, codec: AcousticCodec, semantic: SemanticTokenizer):
    """Raises a `ValueError` naming the mismatch when the tokenizers do not produce the model's token grid."""
    config = model.config
    mismatches = [
        f"{what}: model {expected}, {source} {actual}"
        for what, expected, actual, source in (
            ("RVQ levels", config.num_levels, codec.num_levels, "codec"),
            ("codebook size", config.codebook_size, codec.codebook_size, "codec"),
            ("acoustic frame rate (Hz)", config.acoustic_frame_rate, codec.frame_rate, "codec"),
            ("semantic vocabulary", config.semantic_vocab_size, semantic.vocab_size, "semantic tokenizer"),
            ("semantic frame rate (Hz)", config.semantic_frame_rate, semantic.frame_rate, "semantic tokenizer"),
        )
        if not np.isclose(expected, actual)
    ]
    if mismatches:
        raise ValueError("The tokenizers do not match the model: " + "; ".join(mismatches) + ".")


class SoundStormPipeline:
    """Resynthesis and voice conversion with SoundStorm.

    `pipe(content_audio, voice_prompt=prompt_audio)` takes the semantic tokens of `content_audio` (what is said)
    and the codec tokens of `voice_prompt` (who says it, and how it sounds), generates the codes of the content in
    that voice, and decodes them.

    Memory does not grow with the length of the input: the content is read, resampled and tokenized in chunks of
    `chunk_seconds`, the model generates in windows of its `max_frames` (each prompted by the end of the one
    before), and the codes are decoded in chunks; only the token ids (a few bytes a frame) and the output are whole.
    `convert_to_file` streams the output to a file as well.

    Args:
        model: the SoundStorm model.
        codec: the acoustic codec whose tokens the model generates.
        semantic_tokenizer: the tokenizer of the model's conditioning stream.
        context_seconds: how much of the previous window (or of the voice prompt) prompts the next window.
        min_prompt_seconds: shorter voice prompts are rejected: they carry too little of the voice.
        max_input_seconds: longer content or voice prompts are refused before they are read (default: no limit).
        chunk_seconds: audio tokenized and decoded at a time. Each chunk also sees `overlap_seconds` of audio (or
            codes) on either side, and decoded chunks are cross-faded over `overlap_seconds` where they meet.
            Content up to `chunk_seconds + overlap_seconds` long goes through in one piece.
    """

    overlap_seconds = 1.0

    def __init__(
        self,
        model: SoundStormForConditionalGeneration,
        codec: AcousticCodec,
        semantic_tokenizer: SemanticTokenizer,
        context_seconds: float = 3.0,
        min_prompt_seconds: float = 1.0,
        max_input_seconds: float | None = None,
        chunk_seconds: float = 30.0,
    ):
        check_compatible(model, codec, semantic_tokenizer)
        if chunk_seconds < 4 * self.overlap_seconds:
            raise ValueError(f"chunk_seconds ({chunk_seconds}) must be at least 4 x {self.overlap_seconds} s.")
        self.model, self.codec, self.semantic_tokenizer = model.eval(), codec, semantic_tokenizer
        self.context_seconds, self.min_prompt_seconds = context_seconds, min_prompt_seconds
        self.max_input_seconds, self.chunk_seconds = max_input_seconds, chunk_seconds

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        context_seconds: float = 3.0,
        min_prompt_seconds: float = 1.0,
        max_input_seconds: float | None = None,
        chunk_seconds: float = 30.0,
        adapter: str | Path | None = None,
        **model_kwargs,
    ):
        """Rebuilds model, codec and semantic tokenizer from a model folder or Hub repo.

        `adapter` (a folder or Hub id written by `soundstorm-hf finetune`) is a LoRA adapter merged into the model;
        it must have been trained on this very model (`load_adapter`).

        The model config's `codec_name_or_path` / `semantic_tokenizer_name_or_path` name either a subfolder of the
        model (saved with it) or a Hub id / path of their own. `model_kwargs` go to the model's `from_pretrained`
        (e.g. `dtype`, `revision`). A path that does not exist, a folder without config.json or without the
        tokenizer subfolders its config names, and (offline) a Hub id that is not cached fail at once, naming it.
        """
        if str(name_or_path) == DEFAULT_MODEL_NAME and not Path(name_or_path).exists():
            if not (BUNDLED_DEFAULT_MODEL / "config.json").is_file():
                raise FileNotFoundError(f"model: the bundled default model is missing ({BUNDLED_DEFAULT_MODEL}).")
            name_or_path = BUNDLED_DEFAULT_MODEL
        if Path(name_or_path).resolve() == BUNDLED_DEFAULT_MODEL.resolve():  # also the CLI's path to it
            model_kwargs.setdefault("dtype", torch.float32)  # stored in fp16 to keep the package small
        local = local_path_or_hub_id(name_or_path, "model")
        if local is not None and not (local / "config.json").is_file():
            raise FileNotFoundError(f"model: config.json missing in {local}: not a saved SoundStorm model folder.")
        model = SoundStormForConditionalGeneration.from_pretrained(name_or_path, **model_kwargs)
        config = model.config
        if not config.codec_name_or_path or not config.semantic_tokenizer_name_or_path:
            raise ValueError(
                f"{name_or_path} does not record its tokenizers (`codec_name_or_path` and "
                "`semantic_tokenizer_name_or_path` in config.json); build the pipeline with "
                "`SoundStormPipeline(model, codec, semantic_tokenizer)`."
            )
        if adapter is not None:
            model = load_adapter(model, adapter, name_or_path)
        folder = local or local_folder(name_or_path)

        def resolve(source: str, key: str) -> str:
            if (folder / source).is_dir():
                return str(folder / source)
            if "/" not in source and not Path(source).is_dir():  # a subfolder, as `save_pretrained` records it
                raise FileNotFoundError(
                    f"{name_or_path}: the subfolder {source}/ that config.json names ({key}) is missing."
                )
            return source

        codec = load_acoustic_codec(resolve(config.codec_name_or_path, "codec_name_or_path"))
        semantic_tokenizer = load_semantic_tokenizer(
            resolve(config.semantic_tokenizer_name_or_path, "semantic_tokenizer_name_or_path")
        )
        pipe = cls(
            model, codec, semantic_tokenizer, context_seconds, min_prompt_seconds, max_input_seconds, chunk_seconds
        )
        return pipe.to(device)

    def save_pretrained(self, directory: str | Path, **kwargs) -> None:
        """Saves the model with its tokenizers in subfolders, so that `from_pretrained(directory)` needs nothing else."""
        directory = Path(directory)
        self.codec.save_pretrained(directory / CODEC_SUBFOLDER)
        self.semantic_tokenizer.save_pretrained(directory / SEMANTIC_SUBFOLDER)
        self.model.config.codec_name_or_path = CODEC_SUBFOLDER
        self.model.config.semantic_tokenizer_name_or_path = SEMANTIC_SUBFOLDER
        self.model.save_pretrained(directory, **kwargs)

    def to(self, device: str | torch.device | None) -> SoundStormPipeline:
        if device is not None:
            self.model.to(device)
            self.codec.to(device)
            self.semantic_tokenizer.to(device)
        return self

    @property
    def sampling_rate(self) -> int:
        """Rate of the audio the pipeline returns: the codec's."""
        return self.codec.sampling_rate

    def __call__(
        self,
        audio,
        sampling_rate: int | None = None,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        match_loudness: bool = True,
        **generate_kwargs,
    ) -> dict:
        """Resynthesizes `audio` (in the voice of `voice_prompt` when given).

        Audio is anything `AudioSource` accepts (a file, an array with its rate), mono or stereo, at any rate.
        Keyword arguments go to `generate` (e.g. `steps_per_level`, `temperature`, `seed`, `guidance_scale`).

        With `match_loudness`, the output's speech level (`speech_power`: pauses gated out) is set to the voice
        prompt's, or without a prompt to the content's, as the level is part of how the prompt sounds (raised by at
        most 20 dB; measured on the first decoded chunk, so the gain is the same for the whole output). The output
        is then soft-limited to -1 dBFS (`soft_limit`: samples above -3 dBFS are bent down, quieter ones kept), so
        that writing it as 16-bit PCM never clips; a warning says how many samples went over -1 dBFS. An output that
        stays below -60 dBFS (an undertrained model, say) is returned with a warning.

        Returns `{"audio": np.ndarray (samples,), "sampling_rate": int}`, the prompt part cut off.
        """
        codes, semantic_ids, num_samples, level = self._generate(
            audio, sampling_rate, voice_prompt, prompt_sampling_rate, generate_kwargs
        )
        return self._collect(codes, semantic_ids, num_samples, level if match_loudness else None)

    def from_semantic_ids(
        self,
        semantic_ids,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        match_loudness: bool = True,
        **generate_kwargs,
    ) -> dict:
        """Speaks semantic ids `(frames,)` made elsewhere (by a text-to-semantic model) in the voice of
        `voice_prompt`: the pipeline's call from the point where the content is tokenized (the level is matched to
        the prompt's only, there being no content audio). Returns `{"audio", "sampling_rate"}`, as long as
        `frames` semantic frames."""
        tokenizer = self.semantic_tokenizer
        semantic_ids = torch.as_tensor(semantic_ids, dtype=torch.long, device=self.model.device)
        if semantic_ids.ndim != 1 or not len(semantic_ids):
            raise ValueError(f"Semantic ids must be one non-empty sequence (frames,), got shape {tuple(semantic_ids.shape)}.")
        if semantic_ids.min() < 0 or semantic_ids.max() >= tokenizer.vocab_size:
            raise ValueError(f"Semantic ids must lie in [0, {tokenizer.vocab_size}) for this pipeline's tokenizer.")
        num_samples = round(len(semantic_ids) * tokenizer.hop_length * self.codec.sampling_rate / tokenizer.sampling_rate)
        codes, prompt_level = self._generate_codes(semantic_ids, voice_prompt, prompt_sampling_rate, generate_kwargs)
        return self._collect(codes, semantic_ids, num_samples, prompt_level if match_loudness else None)

    def _collect(self, codes: torch.Tensor, semantic_ids: torch.Tensor, num_samples: int, level: float | None) -> dict:
        """`{"audio", "sampling_rate"}` of `codes`, decoded chunk by chunk into one array."""
        output = np.empty(num_samples, dtype=np.float32)
        position = 0
        for block in self._decode(codes, semantic_ids, num_samples, level, stacklevel=4):
            output[position : position + block.shape[0]] = block
            position += block.shape[0]
        return {"audio": output[:position], "sampling_rate": self.codec.sampling_rate}

    def convert_to_file(
        self,
        audio,
        path: str | Path,
        sampling_rate: int | None = None,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        subtype: str | None = None,
        match_loudness: bool = True,
        **generate_kwargs,
    ) -> dict:
        """Like calling the pipeline, but writes the output to `path` chunk by chunk (format from the extension,
        `subtype` as `soundfile` names it, e.g. "PCM_16", its default for wav), so not even the output is held whole.
        The file is written under a temporary name and renamed to `path` when complete (`atomic_output`).

        Returns `{"path": str, "sampling_rate": int, "num_samples": int}`.
        """
        codes, semantic_ids, num_samples, level = self._generate(
            audio, sampling_rate, voice_prompt, prompt_sampling_rate, generate_kwargs
        )
        with atomic_output(path) as partial:
            with soundfile.SoundFile(str(partial), "w", self.codec.sampling_rate, 1, subtype) as file:
                for block in self._decode(codes, semantic_ids, num_samples, level if match_loudness else None):
                    file.write(block)
        return {"path": str(path), "sampling_rate": self.codec.sampling_rate, "num_samples": num_samples}

    def _generate(self, audio, sampling_rate, voice_prompt, prompt_sampling_rate, generate_kwargs) -> tuple:
        """Codes `(levels, frames)` and semantic ids `(semantic frames,)` of the content, its output length, and the
        speech level the output is matched to: the voice prompt's, else the content's (None for no speech)."""
        content = AudioSource(audio, sampling_rate, "content audio", self.max_input_seconds)
        semantic_ids, content_samples, content_level = self._tokenize_content(content)
        num_samples = round(content_samples * self.codec.sampling_rate / self.semantic_tokenizer.sampling_rate)
        codes, prompt_level = self._generate_codes(semantic_ids, voice_prompt, prompt_sampling_rate, generate_kwargs)
        return codes, semantic_ids, num_samples, prompt_level if voice_prompt is not None else content_level

    def _generate_codes(self, semantic_ids, voice_prompt, prompt_sampling_rate, generate_kwargs) -> tuple:
        """Codes `(levels, frames)` of semantic ids `(semantic frames,)` in the voice of `voice_prompt`, and the
        prompt's speech level (None without a prompt)."""
        prompt_codes = prompt_semantic = prompt_level = None
        if voice_prompt is not None:
            prompt_codes, prompt_semantic, prompt_level = self._encode_prompt(voice_prompt, prompt_sampling_rate)
        context_frames = round(self.context_seconds * self.model.config.acoustic_frame_rate)
        codes = self.model.generate_long(semantic_ids, prompt_codes, prompt_semantic, context_frames, **generate_kwargs)
        return codes, prompt_level

    def _tokenize_content(self, content: AudioSource) -> tuple[torch.Tensor, int, float | None]:
        """Semantic ids `(semantic frames,)` of `content`, its length in samples at the tokenizer's rate, and its
        speech level (`speech_power`, gathered block by block).

        Chunks of `chunk_seconds` are tokenized with `overlap_seconds` of audio on either side and keep the tokens of
        their own frames, so boundary frames see their neighbours; tokens that depend on the whole input (the
        offline MFCC tokenizer's per-utterance normalization, an SSL model's attention) see a chunk instead, and
        can differ from whole-input tokens (tested in tests/test_pipeline_faults.py).
        """
        tokenizer = self.semantic_tokenizer
        chunk, overlap = (self._whole_frames(s, tokenizer) for s in (self.chunk_seconds, self.overlap_seconds))
        ids, buffer, left, total = [], np.zeros(0, dtype=np.float32), 0, 0  # buffer starts `left` samples early
        powers = []
        for block in stream_waveform(content, tokenizer.sampling_rate):
            total += block.shape[0]
            powers.append(frame_powers(block, tokenizer.sampling_rate))
            buffer = np.concatenate([buffer, block])
            while buffer.shape[0] >= left + chunk + overlap:
                ids.append(self._encode_chunk(buffer[: left + chunk + overlap], left, left + chunk))
                buffer, left = buffer[left + chunk - overlap :], overlap
        ids.append(self._encode_chunk(buffer, left, buffer.shape[0]))
        unit = self.model.config.alignment_unit[1] * tokenizer.hop_length
        if total < unit:
            raise content.error(
                f"{total} samples ({total / tokenizer.sampling_rate:.4f} s) at {tokenizer.sampling_rate} Hz; at least "
                f"{unit / tokenizer.sampling_rate:.3f} s (one semantic unit) is needed"
            )
        return torch.cat(ids), total, speech_power(np.concatenate(powers))

    def _encode_chunk(self, waveform: np.ndarray, start: int, end: int) -> torch.Tensor:
        """Tokens `(frames,)` of samples `[start, end)` of `waveform (samples,)`, encoded with what surrounds them."""
        tokenizer = self.semantic_tokenizer
        ids = tokenizer.encode(torch.from_numpy(waveform))[0]  # (frames,)
        return ids[start // tokenizer.hop_length : tokenizer.num_frames(end)]

    def _whole_frames(self, seconds: float, module) -> int:
        """`seconds` rounded to whole frames of `module`, in samples."""
        return round(seconds * module.frame_rate) * module.hop_length

    def _decode(
        self,
        codes: torch.Tensor,
        semantic_ids: torch.Tensor,
        num_samples: int,
        level: float | None = None,
        stacklevel: int = 3,
    ) -> Iterator[np.ndarray]:
        """Output blocks `(samples,)`, `num_samples` in all, at speech level `level` when given (one gain, from the
        first chunk), soft-limited, with warnings for overs and silence.

        Codes `(levels, frames)` are decoded in chunks of `chunk_seconds` with `overlap_seconds` of codes on either
        side; neighbouring chunks are cross-faded linearly over `overlap_seconds` around their boundary. Codes up to
        `chunk_seconds` long are decoded at once. Warnings name the line `stacklevel` frames up (the user's call).
        """
        hop, total_frames = self.codec.hop_length, codes.shape[-1]
        overlap = round(self.overlap_seconds * self.codec.frame_rate)
        half = overlap // 2  # frames faded on each side of a boundary
        num_chunks = math.ceil(total_frames / max(1, round(self.chunk_seconds * self.codec.frame_rate)))
        bounds = [index * total_frames // num_chunks for index in range(num_chunks + 1)]
        fade_in = ((np.arange(2 * half * hop) + 0.5) / (2 * half * hop)).astype(np.float32)
        position, overs, peak, tail, gain = 0, 0, 0.0, None, None
        for start, end in zip(bounds[:-1], bounds[1:]):
            low, high = max(0, start - overlap), min(total_frames, end + overlap)
            audio = self._decode_frames(codes, semantic_ids, low, high)  # (samples,) from frame `low`
            if gain is None:
                generated = speech_power(frame_powers(audio, self.codec.sampling_rate))
                gain = 1.0 if level is None or generated is None else math.sqrt(level / generated)
                gain = min(gain, MAX_LOUDNESS_GAIN)
            audio *= gain  # in place: a fresh decode
            blocks, first = [], (start - low) * hop
            if tail is not None:
                blocks.append(tail * fade_in[::-1] + audio[first - half * hop : first + half * hop] * fade_in)
                first += half * hop
            last = (end - low - half) * hop if end < total_frames else audio.shape[0]
            blocks.append(audio[first:last])
            tail = audio[last : last + 2 * half * hop]
            for block in blocks:
                block = block[: num_samples - position]
                position += block.shape[0]
                overs += int((np.abs(block) > OUTPUT_CEILING).sum())
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
                yield soft_limit(block)
        if overs:
            warnings.warn(
                f"{overs} output samples ({100 * overs / max(position, 1):.2f}%) went over -1 dBFS (peak "
                f"{20 * math.log10(peak):+.1f} dBFS); they were soft-limited to -1 dBFS instead of clipping.",
                stacklevel=stacklevel,
            )
        if peak < SILENT_OUTPUT_PEAK:
            warnings.warn(
                f"The output is silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} dBFS, below -60 dBFS): is the "
                "model trained, and does it match its codec?",
                stacklevel=stacklevel,
            )

    def _decode_frames(self, codes: torch.Tensor, semantic_ids: torch.Tensor, low: int, high: int) -> np.ndarray:
        """Audio `((high - low) * hop_length,)` of frames `[low, high)` of codes `(levels, frames)`."""
        decode_kwargs = {}
        if isinstance(self.codec, MimiCodec) and isinstance(self.semantic_tokenizer, MimiSemanticTokenizer):
            # Mimi's decoder adds its semantic codebook to the acoustic ones: here they are the content's tokens.
            decode_kwargs["semantic_codes"] = semantic_ids[None, low:high]
        return self.codec.decode(codes[None, :, low:high], **decode_kwargs)[0].cpu().numpy()

    def _encode_prompt(self, voice_prompt, sampling_rate) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Codes `(levels, frames)` and semantic ids of the prompt, cut to whole semantic units, and its speech level.

        Generation is prompted with the last `context_seconds` of it; of a prompt longer than `chunk_seconds`, only
        its last `chunk_seconds` are read into memory and encoded.
        """
        config = self.model.config
        frames_per_unit, tokens_per_unit = config.alignment_unit
        prompt = AudioSource(voice_prompt, sampling_rate, "voice prompt", self.max_input_seconds)
        semantic = self.semantic_tokenizer
        seconds = self._whole_frames(self.chunk_seconds, semantic) / semantic.sampling_rate
        codec_wave = self._tail(prompt, self.codec.sampling_rate, seconds)
        duration = codec_wave.shape[-1] / self.codec.sampling_rate
        if duration < self.min_prompt_seconds:
            raise ValueError(
                f"The voice prompt is too short: {duration:.2f} s, at least {self.min_prompt_seconds} s are needed."
            )
        semantic_wave = self._tail(prompt, self.semantic_tokenizer.sampling_rate, seconds)
        codes = self.codec.encode(codec_wave)[0]  # (levels, frames)
        semantic_ids = self.semantic_tokenizer.encode(semantic_wave)[0]  # (semantic frames,)
        units = min(codes.shape[-1] // frames_per_unit, semantic_ids.shape[0] // tokens_per_unit)
        level = speech_power(frame_powers(codec_wave.numpy(), self.codec.sampling_rate))
        return codes[:, : units * frames_per_unit], semantic_ids[: units * tokens_per_unit], level

    @staticmethod
    def _tail(source: AudioSource, sampling_rate: int, seconds: float) -> torch.Tensor:
        """The last `seconds` of `source` at `sampling_rate`, mono `(samples,)`, reading one block at a time."""
        keep = round(seconds * sampling_rate)
        tail = np.zeros(0, dtype=np.float32)
        for block in stream_waveform(source, sampling_rate):
            tail = np.concatenate([tail, block])[-keep:]
        return torch.from_numpy(tail)
