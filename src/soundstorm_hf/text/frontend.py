"""Text and dialogue to speech: text -> semantic tokens -> SoundStorm in a prompt's voice.

The semantic tokens come from a text-to-semantic model (`TextToSemantic`) when one is given or saved beside the
SoundStorm model (`t2s/`); otherwise from the offline front end: speech rendered by espeak-ng (or flite), whose
semantic tokens carry what is said. The front end is also the baseline the T2S model is measured against.
Dialogue transcripts (`[A] Hello there. [B] Hi!`) are checked in full before anything is generated,
so a typo in the last turn fails at once instead of after minutes of generation. Each turn after the first is
prompted by the end of the turn before it, so that turns join as in a conversation.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ..audio import LEVEL_FRAME_SECONDS, AudioSource, frame_powers, speech_power, stream_waveform, synthesize_speech
from ..pipeline import BUNDLED_DEFAULT_MODEL, DEFAULT_MODEL_NAME, SoundStormPipeline
from ..streaming import AudioStream
from ..tokenizers.base import local_folder, local_path_or_hub_id
from .t2s import TextToSemantic

ENGINES = ("espeak-ng", "flite")
T2S_SUBFOLDER = "t2s"
NO_T2S = "none"  # `t2s=NO_T2S`: the offline front end even where the model folder has a T2S model
# Silence between dialogue turns, drawn per turn: gaps between turns in conversation mostly last 0.2-0.8 s.
PAUSE_SECONDS = (0.2, 0.8)
# How much of the previous turn prompts the next one (with the speaker's voice prompt before it and the pause after).
TURN_CONTEXT_SECONDS = 2.0
# Each turn is trimmed to its speech (`speech_span`) and this much on either side, so that the pause a listener hears
# is the one drawn, not that plus the silence the content starts and ends with.
TURN_EDGE_SECONDS = 0.05
# A 50 ms frame is speech when its power is within this of the utterance's speech level (`speech_power`).
SPEECH_FLOOR_DB = 30.0
SPEAKER_TAG = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


def available_engine() -> str:
    """The first installed synthesizer of `ENGINES`."""
    for engine in ENGINES:
        if shutil.which(engine):
            return engine
    raise RuntimeError("No speech synthesizer is installed: `apt-get install espeak-ng` (or flite).")


def render_text(text: str, engine: str | None = None, voice: str | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with `engine` (default: the first installed): `(waveform (samples,), sampling_rate)`.

    The text never reaches a synthesizer's command line (espeak-ng reads standard input, flite a file of its own),
    so a text such as `-f/etc/passwd` is spoken, not obeyed.
    """
    text = text.strip()
    if not text:
        raise ValueError("The text is empty.")
    engine = engine or available_engine()
    if engine == "espeak-ng":
        return synthesize_speech(text, voice or "en")
    if engine == "flite":
        with tempfile.TemporaryDirectory() as folder:
            path, text_path = Path(folder) / "speech.wav", Path(folder) / "text.txt"
            text_path.write_text(text)
            command = ["flite", "-f", str(text_path), "-o", str(path)] + (["-voice", voice] if voice else [])
            subprocess.run(command, capture_output=True, check=True)
            waveform, sampling_rate = soundfile.read(path, dtype="float32")
        return waveform, sampling_rate
    raise ValueError(f"Unknown text-to-speech engine {engine!r}: choose one of {', '.join(ENGINES)}.")


def parse_dialogue(transcript: str, speakers=None) -> list[Turn]:
    """`"[A] Hello. [B] Hi!"` -> `[Turn("A", "Hello."), Turn("B", "Hi!")]`.

    Raises `ValueError` naming the problem: no tag, text before the first tag, an empty tag or turn, a bracket
    that opens or closes no tag (`[B Hi` would otherwise be spoken as the turn before), or a speaker not in
    `speakers` (when given).
    """
    parts = SPEAKER_TAG.split(transcript)  # [before, speaker, text, speaker, text, ...]
    if len(parts) == 1:
        raise ValueError("The transcript has no turns: start every turn with a speaker tag like [A].")
    if parts[0].strip():
        raise ValueError(
            f"Text before the first speaker tag: {parts[0].strip()[:40]!r}; start every turn with a tag like [A]."
        )
    turns = []
    for number, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2]), start=1):
        speaker, text = speaker.strip(), " ".join(text.split())
        if not speaker:
            raise ValueError(f"Turn {number} has an empty speaker tag [].")
        if speakers is not None and speaker not in speakers:
            raise ValueError(
                f"Turn {number} has an unknown speaker tag [{speaker}]; known speakers: "
                + ", ".join(f"[{name}]" for name in speakers)
                + "."
            )
        if not text:
            raise ValueError(f"Turn {number} ([{speaker}]) is empty.")
        stray = re.search(r"[\[\]].{0,20}", text)
        if stray:
            raise ValueError(
                f"Turn {number} ([{speaker}]) has an unclosed speaker tag or a stray bracket at {stray.group()!r}; "
                "write tags as [A]."
            )
        turns.append(Turn(speaker, text))
    return turns


class DialogueStream(AudioStream):
    """A dialogue's `AudioStream`: each turn, after its pause, as soon as it is generated; `timeline` grows by one
    `{"speaker", "text", "start", "end"}` (seconds) per turn."""

    def __init__(self, turns, sampling_rate: int, timeline: list[dict]):
        super().__init__(turns, sampling_rate, None)
        self.timeline = timeline


class TextToSpeech:
    """Text and dialogue on top of a `SoundStormPipeline`, through its public methods only.

    Args:
        pipe: the pipeline whose model and codec speak the content in the prompt's voice.
        engine: synthesizer for the content without a T2S model (`"espeak-ng"` or `"flite"`; default: the first
            installed).
        voice: the synthesizer's voice; it shapes only the content's timing, the output voice is the prompt's.
        max_characters: longer text is refused, so that one request cannot hold a shared server for long.
        t2s: a text-to-semantic model for the pipeline's semantic tokens; `None`: the offline front end.
            `from_pretrained` finds the model folder's own (`load_t2s`), as the CLI and the demo do.
        t2s_kwargs: sampling settings for `TextToSemantic.generate` (`temperature`, `top_k`, `top_p`,
            `do_sample`); the `seed` of a call is passed on too.
    """

    def __init__(self, pipe, engine: str | None = None, voice: str | None = None, max_characters: int = 1000,
                 t2s: TextToSemantic | None = None, t2s_kwargs: dict | None = None):
        if t2s is not None:
            check_t2s(t2s, pipe)
        self.pipe, self.engine, self.voice, self.max_characters = pipe, engine, voice, max_characters
        self.t2s, self.t2s_kwargs = t2s, t2s_kwargs or {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, t2s: str | Path | None = None, device=None, **kwargs):
        """The pipeline of a model folder, Hub id or `"default"`, speaking text through the T2S model that
        `load_t2s` picks (`t2s`, else the model's `t2s/`, else the offline front end); `kwargs` go to
        `TextToSpeech`."""
        pipe = SoundStormPipeline.from_pretrained(name_or_path, device=device)
        return cls(pipe, t2s=load_t2s(name_or_path, t2s, device), **kwargs)

    def _check_length(self, text: str, what: str = "The text") -> None:
        if len(text) > self.max_characters:
            raise ValueError(f"{what} is too long: {len(text)} characters, at most {self.max_characters}.")

    def _content(self, texts: list[str], seed: int | None):
        """What is said, for each text: semantic ids from the T2S model, or else rendered speech."""
        if self.t2s is None:
            return [render_text(text, self.engine, self.voice) for text in texts]
        return self.t2s.generate(texts, seed=seed, **self.t2s_kwargs)

    def _speak(self, content, voice_prompt, generate_kwargs, pipe=None) -> dict:
        pipe = pipe or self.pipe
        if self.t2s is None:
            return pipe(content, voice_prompt=voice_prompt, **generate_kwargs)
        return pipe.from_semantic_ids(content, voice_prompt=voice_prompt, **generate_kwargs)

    def tts(self, text: str, voice_prompt=None, **generate_kwargs) -> dict:
        """Speak `text` in the voice of `voice_prompt` (unprompted without one).

        Returns the pipeline's `{"audio", "sampling_rate"}`.
        """
        self._check_length(text)
        [content] = self._content([text], generate_kwargs.get("seed"))
        return self._speak(content, voice_prompt, generate_kwargs)

    def stream(self, text: str, voice_prompt=None, **generate_kwargs) -> AudioStream:
        """`tts` as an `AudioStream`: output blocks as they are decoded (`SoundStormPipeline.stream`), the first
        after a short first window."""
        self._check_length(text)
        [content] = self._content([text], generate_kwargs.get("seed"))
        if self.t2s is None:
            return self.pipe.stream(content, voice_prompt=voice_prompt, **generate_kwargs)
        return self.pipe.stream_from_semantic_ids(content, voice_prompt=voice_prompt, **generate_kwargs)

    def dialogue(
        self,
        transcript: str,
        voice_prompts: dict,
        pause_seconds: float | tuple[float, float] = PAUSE_SECONDS,
        context_seconds: float = TURN_CONTEXT_SECONDS,
        **generate_kwargs,
    ) -> dict:
        """Generate each turn of `transcript` in its speaker's voice, joined by pauses.

        `voice_prompts` maps each speaker tag (without brackets) to its prompt. Each turn after the first is prompted
        by its speaker's voice prompt followed by the last `context_seconds` of the turn before and the pause between
        them (within half the model's window), so that it follows at the conversation's level and rhythm.
        `pause_seconds` is a fixed pause or a `(shortest, longest)` range that each pause is drawn from (uniformly,
        seeded by `seed`), between turns trimmed to their speech. Every turn and prompt is checked and rendered before
        the first is generated. Returns `{"audio", "sampling_rate", "timeline"}`, the timeline a list of
        `{"speaker", "text", "start", "end"}` in seconds.
        """
        stream = self.stream_dialogue(transcript, voice_prompts, pause_seconds, context_seconds, **generate_kwargs)
        audio = np.concatenate([np.zeros(0, dtype=np.float32), *stream])
        return {"audio": audio, "sampling_rate": stream.sampling_rate, "timeline": stream.timeline}

    def stream_dialogue(
        self,
        transcript: str,
        voice_prompts: dict,
        pause_seconds: float | tuple[float, float] = PAUSE_SECONDS,
        context_seconds: float = TURN_CONTEXT_SECONDS,
        **generate_kwargs,
    ) -> DialogueStream:
        """`dialogue` as a `DialogueStream`: each turn, after its pause, as soon as it is generated, so that playback
        starts with the first turn. Every turn and prompt is checked and rendered before it returns."""
        self._check_length(transcript, "The transcript")
        shortest, longest = (pause_seconds, pause_seconds) if np.isscalar(pause_seconds) else pause_seconds
        if not 0 <= shortest <= longest:
            raise ValueError(f"Pauses must be >= 0 seconds, the shortest first; got {pause_seconds}.")
        if context_seconds < 0:
            raise ValueError(f"The context must be >= 0 seconds, got {context_seconds}.")
        turns = parse_dialogue(transcript, speakers=list(voice_prompts))
        voices = {}
        for turn in turns:
            if voice_prompts[turn.speaker] is None:
                raise ValueError(f"Speaker [{turn.speaker}] has no voice prompt.")
            if turn.speaker not in voices:
                voices[turn.speaker] = self._read_prompt(voice_prompts[turn.speaker], turn.speaker)
        speech = self._content([turn.text for turn in turns], generate_kwargs.get("seed"))
        pauses = np.random.default_rng(generate_kwargs.get("seed")).uniform(shortest, longest, len(turns) - 1)
        timeline = []
        turn_audio = self._turns(turns, speech, voices, voice_prompts, pauses, context_seconds, generate_kwargs, timeline)
        return DialogueStream(turn_audio, self.pipe.sampling_rate, timeline)

    def _turns(self, turns, speech, voices, voice_prompts, pauses, context_seconds, generate_kwargs, timeline):
        """Yields each turn's audio `(samples,)`, preceded by its pause, and appends the turn to `timeline`."""
        rate, previous, start = self.pipe.sampling_rate, None, 0.0
        for number, (turn, content) in enumerate(zip(turns, speech)):
            pause = np.zeros(round(pauses[number - 1] * rate) if number else 0, dtype=np.float32)
            if number:
                prompt, pipe = self._turn_prompt(voices[turn.speaker], previous, pause, context_seconds)
                start += len(pause) / rate
            else:
                prompt, pipe = voice_prompts[turn.speaker], self.pipe
            audio = self._speak(content, prompt, generate_kwargs, pipe)["audio"].astype(np.float32, copy=False)
            span = speech_span(audio, rate)
            if span is not None:
                edge = round(TURN_EDGE_SECONDS * rate)
                audio = audio[max(0, span[0] - edge) : span[1] + edge]
            end = start + len(audio) / rate
            timeline.append({"speaker": turn.speaker, "text": turn.text, "start": start, "end": end})
            start, previous = end, audio
            yield np.concatenate([pause, audio])

    def _read_prompt(self, voice_prompt, speaker: str) -> np.ndarray:
        """The last `context_seconds` of a speaker's voice prompt `(samples,)` at the pipeline's rate: the part
        of it that generation is prompted with."""
        source = AudioSource(voice_prompt, None, f"voice prompt [{speaker}]", self.pipe.max_input_seconds)
        keep = round(self.pipe.context_seconds * self.pipe.sampling_rate)
        return np.concatenate(list(stream_waveform(source, self.pipe.sampling_rate)))[-keep:]

    def _turn_prompt(self, voice: np.ndarray, previous: np.ndarray, pause: np.ndarray, context_seconds: float):
        """`((voice | end of the previous turn | pause) (samples,), rate)` and a pipeline prompted by all of it.

        The previous turn gets what is left of half the model's window (the most context `generate_long` takes)
        after the voice and the pause.
        """
        rate, config = self.pipe.sampling_rate, self.pipe.model.config
        room = round(config.max_frames / config.acoustic_frame_rate / 2 * rate) - len(voice) - len(pause)
        keep = max(0, min(round(context_seconds * rate), room, len(previous)))
        prompt = np.concatenate([voice, previous[len(previous) - keep :], pause])
        pipe = copy.copy(self.pipe)  # shares the model and tokenizers; only the context differs
        pipe.context_seconds = len(prompt) / rate
        return (prompt, rate), pipe


def speech_span(audio: np.ndarray, sampling_rate: int) -> tuple[int, int] | None:
    """Samples `[start, end)` of `audio` `(samples,)` from its first to past its last speech frame (within
    `SPEECH_FLOOR_DB` of its speech level); None where nothing is audible."""
    powers = frame_powers(audio, sampling_rate)
    level = speech_power(powers)
    if level is None:
        return None
    frames = np.flatnonzero(powers > level * 10 ** (-SPEECH_FLOOR_DB / 10))
    size = max(1, round(LEVEL_FRAME_SECONDS * sampling_rate))  # frame_powers' frame
    return int(frames[0]) * size, min(len(audio), (int(frames[-1]) + 1) * size)


def find_t2s(model_name_or_path: str | Path, t2s: str | Path | None = None) -> Path | None:
    """The T2S model folder a SoundStorm model speaks text through: the one rule for Python, the CLI and the demo.

    `t2s` names it, or is `"none"` for the offline front end (None); by default it is the model's `t2s/`
    subfolder (of a local folder, the bundled `"default"` or a downloaded Hub repo), None where there is none.
    A named folder that does not exist fails, naming it.
    """
    if t2s is not None:
        if str(t2s) == NO_T2S:
            return None
        if not Path(t2s).is_dir():
            raise FileNotFoundError(f"T2S model folder not found: {t2s}")
        return Path(t2s)
    if str(model_name_or_path) == DEFAULT_MODEL_NAME and not Path(model_name_or_path).exists():
        model_name_or_path = BUNDLED_DEFAULT_MODEL
    folder = (local_path_or_hub_id(model_name_or_path, "model") or local_folder(model_name_or_path)) / T2S_SUBFOLDER
    return folder if (folder / "config.json").is_file() else None


def load_t2s(model_name_or_path: str | Path, t2s: str | Path | None = None, device=None) -> TextToSemantic | None:
    """The T2S model that `find_t2s` picks, on `device`, or None (the offline front end)."""
    folder = find_t2s(model_name_or_path, t2s)
    return TextToSemantic.from_pretrained(folder).to(device) if folder is not None else None


def check_t2s(t2s: TextToSemantic, pipe) -> None:
    """Refuse a T2S model whose semantic tokens are not those of the pipeline's SoundStorm model."""
    tokenizer = pipe.semantic_tokenizer
    if t2s.config.semantic_vocab_size != tokenizer.vocab_size or not np.isclose(t2s.config.semantic_frame_rate, tokenizer.frame_rate):
        raise ValueError(
            f"The T2S model writes {t2s.config.semantic_vocab_size} semantic ids at {t2s.config.semantic_frame_rate} Hz, "
            f"the pipeline's semantic tokenizer has {tokenizer.vocab_size} at {tokenizer.frame_rate} Hz."
        )
