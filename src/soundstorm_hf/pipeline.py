"""Audio in, audio out: semantic tokenizer -> SoundStorm -> codec decoder, in chunks so memory stays flat.

The pipeline loads the three parts and runs them in order; the parts of a call live in their own modules: the
inputs' tokens (`content_tokenizing`), codes to output audio (`output_decoding`) and streamed output (`streaming`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .adapters import ADAPTER_INFO_NAME, weights_fingerprint
from .audio import AudioSource
from .content_tokenizing import encode_prompt, tokenize_content, whole_frames
from .modeling_soundstorm import SoundStormForConditionalGeneration
from .output_decoding import OutputDecoder
from .streaming import AudioStream
from .tokenizers import AcousticCodec, SemanticTokenizer, load_acoustic_codec, load_semantic_tokenizer
from .tokenizers.base import local_folder, local_path_or_hub_id

CODEC_SUBFOLDER = "codec"
SEMANTIC_SUBFOLDER = "semantic_tokenizer"
DEFAULT_MODEL_NAME = "default"  # `from_pretrained("default")`: the model bundled in the package, no network
BUNDLED_DEFAULT_MODEL = Path(__file__).parent / "default"
# A stream's first window: this much new audio, so that the first block comes soon (later windows are full).
FIRST_WINDOW_SECONDS = 2.0


def bundled_default_model() -> Path:
    """The folder of the model bundled in the package; a `FileNotFoundError` naming it where it was not built."""
    if not (BUNDLED_DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"the bundled default model is not built yet ({BUNDLED_DEFAULT_MODEL} has no config.json)")
    return BUNDLED_DEFAULT_MODEL


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
    `chunk_seconds`, the model generates in windows of its `max_frames` (each prompted by the end of the voice
    prompt and of the window before), and the codes are decoded in chunks; only the token ids (a few bytes a frame) and the output are whole.
    `convert_to_file` streams the output to a file as well, and `stream` hands it out block by block as it is
    generated, starting after a short first window.

    Args:
        model: the SoundStorm model.
        codec: the acoustic codec whose tokens the model generates.
        semantic_tokenizer: the tokenizer of the model's conditioning stream.
        context_seconds: how much of the voice prompt, and of the previous window, prompts each window.
        min_prompt_seconds: shorter voice prompts are rejected: they carry too little of the voice.
        max_input_seconds: longer content or voice prompts are refused before they are read (default: no limit).
        chunk_seconds: audio tokenized and decoded at a time. Each chunk also sees `overlap_seconds` of audio (or
            half of it, of codes) on either side, and decoded chunks are cross-faded over `overlap_seconds` where
            they meet.
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
            name_or_path = bundled_default_model()
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
        Keyword arguments go to `generate_long` and `generate` (e.g. `steps_per_level`, `temperature`, `seed`,
        `guidance_scale`, `keep_prompt`).

        With `match_loudness`, the output's speech level (`speech_power`: pauses gated out) is set to the voice
        prompt's, or without a prompt to the content's, as the level is part of how the prompt sounds (raised by at
        most 20 dB; measured on the first decoded chunk, so the gain is the same for the whole output). The output
        is then soft-limited to -1 dBFS (`soft_limit`: samples above -3 dBFS are bent down, quieter ones kept), so
        that writing it as 16-bit PCM never clips; a warning says how many samples went over -1 dBFS. An output that
        stays below -60 dBFS (an undertrained model, say) is returned with a warning.

        Returns `{"audio": np.ndarray (samples,), "sampling_rate": int}`, the prompt part cut off; with
        `return_trace=True`, also `"trace"`: the forward pass that fixed each generated token, `(levels, frames)`
        (`generate_long`).
        """
        semantic_ids, num_samples, content_level = self._content_ids(audio, sampling_rate)
        return self._speak(
            semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness, generate_kwargs
        )

    def stream(
        self,
        audio,
        sampling_rate: int | None = None,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        match_loudness: bool = True,
        first_window_seconds: float | None = FIRST_WINDOW_SECONDS,
        return_trace: bool = False,
        **generate_kwargs,
    ) -> AudioStream:
        """The pipeline's call, streamed: an `AudioStream` of output blocks (at `.sampling_rate`) handed out as each
        window is generated and decoded, so playback can start after the first window (`first_window_seconds` of
        new audio; later windows are as long as the model takes). Blocks join without clicks (decoded chunks are
        cross-faded), at one loudness gain from the first decoded chunk, soft-limited. The inputs are read, checked
        and tokenized before this returns; generation runs as the stream is read. With `return_trace`, the stream's
        `trace` is the decoding trace of the frames generated so far. Other arguments as for the call.
        """
        semantic_ids, num_samples, content_level = self._content_ids(audio, sampling_rate)
        return self._stream(
            semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness,
            first_window_seconds, return_trace, generate_kwargs,
        )

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
        semantic_ids, num_samples = self._checked_semantic_ids(semantic_ids)
        return self._speak(
            semantic_ids, num_samples, None, voice_prompt, prompt_sampling_rate, match_loudness, generate_kwargs
        )

    def stream_from_semantic_ids(
        self,
        semantic_ids,
        voice_prompt=None,
        prompt_sampling_rate: int | None = None,
        match_loudness: bool = True,
        first_window_seconds: float | None = FIRST_WINDOW_SECONDS,
        return_trace: bool = False,
        **generate_kwargs,
    ) -> AudioStream:
        """`from_semantic_ids`, streamed as `stream` streams the call: text to speech streams through this."""
        semantic_ids, num_samples = self._checked_semantic_ids(semantic_ids)
        return self._stream(
            semantic_ids, num_samples, None, voice_prompt, prompt_sampling_rate, match_loudness, first_window_seconds,
            return_trace, generate_kwargs,
        )

    def _checked_semantic_ids(self, semantic_ids) -> tuple[torch.Tensor, int]:
        """Semantic ids `(frames,)` from elsewhere, checked against the tokenizer, and their output length."""
        tokenizer = self.semantic_tokenizer
        semantic_ids = torch.as_tensor(semantic_ids, dtype=torch.long, device=self.model.device)
        if semantic_ids.ndim != 1 or not len(semantic_ids):
            raise ValueError(
                f"Semantic ids must be one non-empty sequence (frames,), got shape {tuple(semantic_ids.shape)}."
            )
        if semantic_ids.min() < 0 or semantic_ids.max() >= tokenizer.vocab_size:
            raise ValueError(f"Semantic ids must lie in [0, {tokenizer.vocab_size}) for this pipeline's tokenizer.")
        num_samples = round(len(semantic_ids) * tokenizer.hop_length * self.sampling_rate / tokenizer.sampling_rate)
        return semantic_ids, num_samples

    def _speak(self, semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness,
               generate_kwargs) -> dict:
        """`{"audio", "sampling_rate"}`: the whole-chunk stream (full windows, whole decoding chunks) in one array."""
        return_trace = generate_kwargs.pop("return_trace", False)
        stream = self._stream(
            semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness, None,
            return_trace, generate_kwargs, eager=False, stacklevel=6,
        )
        output = np.empty(num_samples, dtype=np.float32)
        position = 0
        for block in stream:
            output[position : position + block.shape[0]] = block
            position += block.shape[0]
        return {"audio": output[:position], "sampling_rate": self.sampling_rate} | (
            {"trace": stream.trace} if return_trace else {}
        )

    def _stream(self, semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness,
                first_window_seconds, return_trace, generate_kwargs, eager=True, stacklevel=4) -> AudioStream:
        """An `AudioStream` of each window's codes (`generate_windows`), decoded as soon as they are generated
        (`eager`) or in whole chunks; warnings name the line `stacklevel` frames up from the decoder (the reader's)."""
        generation, level = self._conditions(voice_prompt, prompt_sampling_rate, content_level, match_loudness)
        if first_window_seconds is not None:
            frames = round(first_window_seconds * self.model.config.acoustic_frame_rate)
            generation["first_window_frames"] = max(1, frames)
        windows = self.model.generate_windows(semantic_ids, return_trace=return_trace, **generation, **generate_kwargs)
        decoder = self._output_decoder(semantic_ids, num_samples, level, eager, stacklevel)
        traces = [] if return_trace else None

        def blocks():
            for codes, trace in windows:
                if traces is not None:
                    traces.append(trace.cpu())
                yield from decoder.push(codes)
            yield from decoder.finish()

        return AudioStream(blocks(), self.sampling_rate, traces)

    def _conditions(
        self, voice_prompt, prompt_sampling_rate, content_level, match_loudness
    ) -> tuple[dict, float | None]:
        """The voice prompt's arguments to `generate_long` / `generate_windows`, and the output's speech level: the
        prompt's, else the content's (None: keep the generated level)."""
        generation = {"context_frames": round(self.context_seconds * self.model.config.acoustic_frame_rate)}
        level = content_level
        if voice_prompt is not None:
            codes, semantic_ids, level = self._encode_prompt(voice_prompt, prompt_sampling_rate)
            generation.update(prompt_ids=codes, prompt_semantic_ids=semantic_ids)
        return generation, level if match_loudness else None

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
        """Like calling the pipeline, but writes the output to `path` chunk by chunk as it is generated (format from
        the extension, `subtype` as `soundfile` names it, e.g. "PCM_16", its default for wav), so not even the output
        is held whole. The samples are those the call returns. The file is written under a temporary name and renamed
        to `path` when complete (`AudioStream.save`): an interrupted call leaves what was there.

        Returns `{"path": str, "sampling_rate": int, "num_samples": int}`.
        """
        semantic_ids, num_samples, content_level = self._content_ids(audio, sampling_rate)
        stream = self._stream(
            semantic_ids, num_samples, content_level, voice_prompt, prompt_sampling_rate, match_loudness, None, False,
            generate_kwargs, eager=False, stacklevel=5,
        )
        written = stream.save(path, subtype)
        return {"path": str(path), "sampling_rate": self.sampling_rate, "num_samples": written}

    def _content_ids(self, audio, sampling_rate) -> tuple[torch.Tensor, int, float | None]:
        """Semantic ids `(semantic frames,)` of the content, its output length in samples, and its speech level."""
        content = AudioSource(audio, sampling_rate, "content audio", self.max_input_seconds)
        semantic_ids, content_samples, content_level = self._tokenize_content(content)
        num_samples = round(content_samples * self.sampling_rate / self.semantic_tokenizer.sampling_rate)
        return semantic_ids, num_samples, content_level

    def _tokenize_content(self, content: AudioSource) -> tuple[torch.Tensor, int, float | None]:
        """`tokenize_content` in chunks of `chunk_seconds`."""
        unit_frames = self.model.config.alignment_unit[1]
        return tokenize_content(self.semantic_tokenizer, content, self.chunk_seconds, self.overlap_seconds, unit_frames)

    def _encode_prompt(self, voice_prompt, sampling_rate) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """`encode_prompt` of the voice prompt's last `chunk_seconds` (generation is prompted by its last
        `context_seconds`)."""
        prompt = AudioSource(voice_prompt, sampling_rate, "voice prompt", self.max_input_seconds)
        semantic = self.semantic_tokenizer
        seconds = whole_frames(self.chunk_seconds, semantic) / semantic.sampling_rate
        alignment_unit = self.model.config.alignment_unit
        return encode_prompt(self.codec, semantic, prompt, alignment_unit, seconds, self.min_prompt_seconds)

    def _output_decoder(self, semantic_ids, num_samples: int, level, eager: bool, stacklevel: int) -> OutputDecoder:
        frame_rate = self.codec.frame_rate
        chunk_frames, overlap_frames = (round(s * frame_rate) for s in (self.chunk_seconds, self.overlap_seconds))
        return OutputDecoder(
            self.codec, self.semantic_tokenizer, semantic_ids, num_samples, level, chunk_frames, overlap_frames, eager,
            stacklevel,
        )

    def _decode(self, codes, semantic_ids, num_samples: int, level: float | None = None, stacklevel: int = 3):
        """Output blocks of all of `codes` `(levels, frames)` at once (`OutputDecoder.decode`)."""
        return self._output_decoder(semantic_ids, num_samples, level, False, stacklevel).decode(codes)
