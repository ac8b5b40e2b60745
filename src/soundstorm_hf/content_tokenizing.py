"""The pipeline's inputs as tokens: the content's semantic ids, read and tokenized in chunks, and the voice prompt's
codes and semantic ids; each with its speech level, which the output's loudness is matched to."""

from __future__ import annotations

import numpy as np
import torch

from .audio import AudioSource, frame_powers, speech_power, stream_waveform
from .tokenizers import AcousticCodec, SemanticTokenizer


def whole_frames(seconds: float, module) -> int:
    """`seconds` rounded to whole frames of `module` (a tokenizer or codec), in samples."""
    return round(seconds * module.frame_rate) * module.hop_length


def tokenize_content(
    tokenizer: SemanticTokenizer, content: AudioSource, chunk_seconds: float, overlap_seconds: float, unit_frames: int
) -> tuple[torch.Tensor, int, float | None]:
    """Semantic ids `(semantic frames,)` of `content`, its length in samples at the tokenizer's rate, and its speech
    level (`speech_power`, gathered block by block). Content shorter than `unit_frames` tokens is refused.

    Chunks of `chunk_seconds` are tokenized with `overlap_seconds` of audio on either side and keep the tokens of
    their own frames, so boundary frames see their neighbours; tokens that depend on the whole input (the offline
    MFCC tokenizer's per-utterance normalization, an SSL model's attention) see a chunk instead, and can differ from
    whole-input tokens (tested in tests/test_pipeline_faults.py).
    """
    chunk, overlap = (whole_frames(s, tokenizer) for s in (chunk_seconds, overlap_seconds))
    ids, buffer, left, total = [], np.zeros(0, dtype=np.float32), 0, 0  # buffer starts `left` samples early
    powers = []
    for block in stream_waveform(content, tokenizer.sampling_rate):
        total += block.shape[0]
        powers.append(frame_powers(block, tokenizer.sampling_rate))
        buffer = np.concatenate([buffer, block])
        while buffer.shape[0] >= left + chunk + overlap:
            ids.append(encode_chunk(tokenizer, buffer[: left + chunk + overlap], left, left + chunk))
            buffer, left = buffer[left + chunk - overlap :], overlap
    ids.append(encode_chunk(tokenizer, buffer, left, buffer.shape[0]))
    unit = unit_frames * tokenizer.hop_length
    if total < unit:
        raise content.error(
            f"{total} samples ({total / tokenizer.sampling_rate:.4f} s) at {tokenizer.sampling_rate} Hz; at least "
            f"{unit / tokenizer.sampling_rate:.3f} s (one semantic unit) is needed"
        )
    return torch.cat(ids), total, speech_power(np.concatenate(powers))


def encode_chunk(tokenizer: SemanticTokenizer, waveform: np.ndarray, start: int, end: int) -> torch.Tensor:
    """Tokens `(frames,)` of samples `[start, end)` of `waveform (samples,)`, encoded with what surrounds them."""
    ids = tokenizer.encode(torch.from_numpy(waveform))[0]  # (frames,)
    return ids[start // tokenizer.hop_length : tokenizer.num_frames(end)]


def encode_prompt(
    codec: AcousticCodec,
    tokenizer: SemanticTokenizer,
    prompt: AudioSource,
    alignment_unit: tuple[int, int],
    max_seconds: float,
    min_seconds: float,
) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Codes `(levels, frames)` and semantic ids of the voice prompt, cut to whole alignment units, and its speech
    level. Only its last `max_seconds` are read into memory and encoded; one shorter than `min_seconds` is refused."""
    frames_per_unit, tokens_per_unit = alignment_unit
    codec_wave = read_tail(prompt, codec.sampling_rate, max_seconds)
    duration = codec_wave.shape[-1] / codec.sampling_rate
    if duration < min_seconds:
        raise ValueError(f"The voice prompt is too short: {duration:.2f} s, at least {min_seconds} s are needed.")
    semantic_wave = read_tail(prompt, tokenizer.sampling_rate, max_seconds)
    codes = codec.encode(codec_wave)[0]  # (levels, frames)
    semantic_ids = tokenizer.encode(semantic_wave)[0]  # (semantic frames,)
    units = min(codes.shape[-1] // frames_per_unit, semantic_ids.shape[0] // tokens_per_unit)
    level = speech_power(frame_powers(codec_wave.numpy(), codec.sampling_rate))
    return codes[:, : units * frames_per_unit], semantic_ids[: units * tokens_per_unit], level


def read_tail(source: AudioSource, sampling_rate: int, seconds: float) -> torch.Tensor:
    """The last `seconds` of `source` at `sampling_rate`, mono `(samples,)`, reading one block at a time."""
    keep = round(seconds * sampling_rate)
    tail = np.zeros(0, dtype=np.float32)
    for block in stream_waveform(source, sampling_rate):
        tail = np.concatenate([tail, block])[-keep:]
    return torch.from_numpy(tail)
