"""From generated codes to the output waveform: chunked codec decoding with crossfades, loudness, soft limiting.

Codes may arrive window by window (streaming) or all at once; either way they are decoded in chunks with a little
context on either side, neighbouring chunks are cross-faded, and every sample goes out as soon as no later code can
change it, so memory stays that of one chunk and a stream starts playing after its first window.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from .audio import frame_powers, speech_power
from .tokenizers import AcousticCodec, MimiCodec, MimiSemanticTokenizer, SemanticTokenizer

# Output level: peaks are bent down from the knee so that none exceeds the ceiling (16-bit files never clip).
OUTPUT_CEILING = 10 ** (-1 / 20)  # -1 dBFS
LIMITER_KNEE = 10 ** (-3 / 20)  # -3 dBFS
# An output whose peak stays below this is reported as silence (-60 dBFS): typically an undertrained model.
SILENT_OUTPUT_PEAK = 1e-3
# Loudness matching raises the output's level by at most this factor (20 dB): more would amplify near-silence.
MAX_LOUDNESS_GAIN = 10.0


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Bend samples above `LIMITER_KNEE` smoothly (tanh) under `OUTPUT_CEILING`, in place; quieter ones are kept.

    Memoryless, so chunked decoding gives the same samples as decoding at once.
    """
    span = OUTPUT_CEILING - LIMITER_KNEE
    magnitude = np.abs(audio)
    loud = magnitude > LIMITER_KNEE
    audio[loud] = np.sign(audio[loud]) * (LIMITER_KNEE + span * np.tanh((magnitude[loud] - LIMITER_KNEE) / span))
    return audio


class OutputDecoder:
    """Decodes codes `(levels, frames)` pushed in order into output blocks `(samples,)`, `num_samples` in all.

    Each chunk (at most `chunk_frames` new frames) is decoded with `overlap_frames // 2` frames of codes on either
    side where they exist, and fades in linearly over the last `overlap_frames` of the chunk before it, which are
    held back until then; the last chunk keeps its end. `eager` decodes whatever has arrived at each push (a
    stream's latency); otherwise chunks wait until they are whole, and the last two chunks' worth is cut into equal
    chunks, so that codes pushed all at once are decoded exactly as in one call per equal chunk. The
    output is scaled to speech level `level` when given (one gain, measured on the first decoded chunk, so that a
    stream needs no look-ahead, capped at `MAX_LOUDNESS_GAIN`) and soft-limited; `finish` warns about samples that
    went over -1 dBFS and about silence, naming the line `stacklevel` frames up.
    """

    def __init__(
        self,
        codec: AcousticCodec,
        semantic_tokenizer: SemanticTokenizer,
        semantic_ids: torch.Tensor,
        num_samples: int,
        level: float | None,
        chunk_frames: int,
        overlap_frames: int,
        eager: bool = False,
        stacklevel: int = 3,
    ):
        self.codec, self.semantic_ids, self.num_samples, self.level = codec, semantic_ids, num_samples, level
        # Mimi's decoder adds its semantic codebook to the acoustic ones: here they are the content's tokens.
        self.with_semantic = isinstance(codec, MimiCodec) and isinstance(semantic_tokenizer, MimiSemanticTokenizer)
        self.chunk_frames, self.half = max(1, chunk_frames), overlap_frames // 2
        fade_samples = 2 * self.half * codec.hop_length
        self.fade_in = ((np.arange(fade_samples) + 0.5) / fade_samples).astype(np.float32)
        self.codes = None  # (levels, frames) from frame `self.first`: what later chunks may still need
        self.first, self.available, self.end = 0, 0, 0  # chunks are decoded up to `end`
        self.tail = None  # audio of frames [end - 2 * half, end), to fade out under the next chunk
        self.gain, self.position, self.overs, self.peak = None, 0, 0, 0.0
        self.eager, self.stacklevel = eager, stacklevel

    def push(self, codes: torch.Tensor) -> Iterator[np.ndarray]:
        """Takes the next frames `(levels, new_frames)`; yields the blocks they complete."""
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes], dim=-1)
        self.available += codes.shape[-1]
        if self.eager:
            while self.available - self.end > 2 * self.half:  # a chunk gives more than the part it holds back
                yield self._chunk(self._next_end(), final=False)
        while self.available - self.end >= 2 * self.chunk_frames + self.half:
            yield self._chunk(self.end + self.chunk_frames, final=False)

    def finish(self) -> Iterator[np.ndarray]:
        """Yields the rest of the output, then warns about overs and silence."""
        while self.available - self.end > self.chunk_frames:
            yield self._chunk(self._next_end(), final=False)
        if self.end < self.available:
            yield self._chunk(self.available, final=True)
        elif self.tail is not None:  # the end of the output: nothing comes to fade in under it
            yield self._emit(self.tail)
        if self.overs:
            warnings.warn(
                f"{self.overs} output samples ({100 * self.overs / max(self.position, 1):.2f}%) went over -1 dBFS "
                f"(peak {20 * math.log10(self.peak):+.1f} dBFS); they were soft-limited to -1 dBFS instead of "
                "clipping.",
                stacklevel=self.stacklevel,
            )
        if self.peak < SILENT_OUTPUT_PEAK:
            warnings.warn(
                f"The output is silent (peak {20 * math.log10(max(self.peak, 1e-12)):.0f} dBFS, below -60 dBFS): is "
                "the model trained, and does it match its codec?",
                stacklevel=self.stacklevel,
            )

    def decode(self, codes: torch.Tensor) -> Iterator[np.ndarray]:
        """All of `codes` `(levels, frames)` at once: equal chunks of at most `chunk_frames`."""
        yield from self.push(codes)
        yield from self.finish()

    def _next_end(self) -> int:
        """End of the next chunk: the frames not yet decoded, cut into equal chunks of at most `chunk_frames`."""
        pending = self.available - self.end
        return self.end + pending // math.ceil(pending / self.chunk_frames)

    def _chunk(self, end: int, final: bool) -> np.ndarray:
        """Decodes frames up to `end`, fades in over the held-back tail; the block to yield: all but the new tail
        (all if final, with what the codec gives beyond `end`)."""
        hop, fade = self.codec.hop_length, 2 * self.half
        start = self.end - fade if self.tail is not None else 0  # first frame to yield
        low, high = max(0, start - self.half), min(self.available, end + self.half)
        audio = self._decode_frames(low, high)  # (samples,) from frame `low`
        if self.gain is None:
            generated = speech_power(frame_powers(audio, self.codec.sampling_rate))
            gain = 1.0 if self.level is None or generated is None else math.sqrt(self.level / generated)
            self.gain = min(gain, MAX_LOUDNESS_GAIN)
        audio *= self.gain  # in place: a fresh decode
        block = audio[(start - low) * hop : None if final else (end - low) * hop]
        if self.tail is not None:
            block[: fade * hop] = self.tail * self.fade_in[::-1] + block[: fade * hop] * self.fade_in
        if not final:
            block, self.tail = block[: (end - fade - start) * hop], block[(end - fade - start) * hop :]
        self.end = end
        still_needed = max(0, end - fade - self.half)  # the next chunk's first frame of context
        self.codes, self.first = self.codes[:, still_needed - self.first :], still_needed
        return self._emit(block)

    def _emit(self, block: np.ndarray) -> np.ndarray:
        """`block` cut to the output's length, counted for the warnings, soft-limited."""
        block = block[: self.num_samples - self.position]
        self.position += block.shape[0]
        self.overs += int((np.abs(block) > OUTPUT_CEILING).sum())
        self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))
        return soft_limit(block)

    def _decode_frames(self, low: int, high: int) -> np.ndarray:
        """Audio `((high - low) * hop_length,)` of frames `[low, high)`."""
        decode_kwargs = {}
        if self.with_semantic:
            decode_kwargs["semantic_codes"] = self.semantic_ids[None, low:high]
        codes = self.codes[None, :, low - self.first : high - self.first]
        return self.codec.decode(codes, **decode_kwargs)[0].cpu().numpy()
