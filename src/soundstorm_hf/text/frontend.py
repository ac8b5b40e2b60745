"""Text and dialogue to speech: text -> semantic tokens -> SoundStorm in a prompt's voice.

The semantic tokens come from a text-to-semantic model (`TextToSemantic`) when one is given or saved beside the
SoundStorm model (`t2s/`); otherwise from the offline front end: speech rendered by espeak-ng (or flite), whose
semantic tokens carry what is said. The front end is also the baseline the T2S model is measured against.
Dialogue transcripts (`[A] Hello there. [B] Hi!`) are checked in full before anything is generated,
so a typo in the last turn fails at once instead of after minutes of generation.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ..audio import synthesize_speech
from .t2s import TextToSemantic

ENGINES = ("espeak-ng", "flite")
T2S_SUBFOLDER = "t2s"
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


class TextToSpeech:
    """Text and dialogue on top of a `SoundStormPipeline`, through its public methods only.

    Args:
        pipe: the pipeline whose model and codec speak the content in the prompt's voice.
        engine: synthesizer for the content without a T2S model (`"espeak-ng"` or `"flite"`; default: the first
            installed).
        voice: the synthesizer's voice; it shapes only the content's timing, the output voice is the prompt's.
        max_characters: longer text is refused, so that one request cannot hold a shared server for long.
        t2s: a text-to-semantic model for the pipeline's semantic tokens; `None`: the offline front end.
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
        """The pipeline of a model folder (or Hub id) with the T2S model `t2s`, or else the one in its `t2s/`
        subfolder when there is one; `kwargs` go to `TextToSpeech`."""
        from ..pipeline import SoundStormPipeline

        pipe = SoundStormPipeline.from_pretrained(name_or_path, device=device)
        t2s = t2s or t2s_beside(name_or_path)
        model = TextToSemantic.from_pretrained(t2s).to(device) if t2s is not None else None
        return cls(pipe, t2s=model, **kwargs)

    def _check_length(self, text: str, what: str = "The text") -> None:
        if len(text) > self.max_characters:
            raise ValueError(f"{what} is too long: {len(text)} characters, at most {self.max_characters}.")

    def _content(self, texts: list[str], seed: int | None):
        """What is said, for each text: semantic ids from the T2S model, or else rendered speech."""
        if self.t2s is None:
            return [render_text(text, self.engine, self.voice) for text in texts]
        return self.t2s.generate(texts, seed=seed, **self.t2s_kwargs)

    def _speak(self, content, voice_prompt, generate_kwargs) -> dict:
        if self.t2s is None:
            return self.pipe(content, voice_prompt=voice_prompt, **generate_kwargs)
        return self.pipe.from_semantic_ids(content, voice_prompt=voice_prompt, **generate_kwargs)

    def tts(self, text: str, voice_prompt=None, **generate_kwargs) -> dict:
        """Speak `text` in the voice of `voice_prompt` (unprompted without one).

        Returns the pipeline's `{"audio", "sampling_rate"}`.
        """
        self._check_length(text)
        [content] = self._content([text], generate_kwargs.get("seed"))
        return self._speak(content, voice_prompt, generate_kwargs)

    def dialogue(self, transcript: str, voice_prompts: dict, pause_seconds: float = 0.4, **generate_kwargs) -> dict:
        """Generate each turn of `transcript` in its speaker's voice and join the turns with `pause_seconds` of silence.

        `voice_prompts` maps each speaker tag (without brackets) to its prompt. Every turn is checked and rendered
        before the first is generated. Returns `{"audio", "sampling_rate", "timeline"}`, the timeline a list of
        `{"speaker", "text", "start", "end"}` in seconds.
        """
        self._check_length(transcript, "The transcript")
        if pause_seconds < 0:
            raise ValueError(f"The pause must be >= 0 seconds, got {pause_seconds}.")
        turns = parse_dialogue(transcript, speakers=list(voice_prompts))
        for turn in turns:
            if voice_prompts[turn.speaker] is None:
                raise ValueError(f"Speaker [{turn.speaker}] has no voice prompt.")
        speech = self._content([turn.text for turn in turns], generate_kwargs.get("seed"))
        rate = self.pipe.sampling_rate
        pause = np.zeros(round(pause_seconds * rate), dtype=np.float32)
        pieces, timeline, start = [], [], 0.0
        for number, (turn, content) in enumerate(zip(turns, speech)):
            audio = self._speak(content, voice_prompts[turn.speaker], generate_kwargs)["audio"]
            if number:
                pieces.append(pause)
                start += len(pause) / rate
            pieces.append(audio.astype(np.float32, copy=False))
            end = start + len(audio) / rate
            timeline.append({"speaker": turn.speaker, "text": turn.text, "start": start, "end": end})
            start = end
        return {"audio": np.concatenate(pieces), "sampling_rate": rate, "timeline": timeline}


def t2s_beside(name_or_path: str | Path) -> Path | None:
    """The `t2s/` subfolder of a local SoundStorm model folder, when it holds a T2S model."""
    folder = Path(name_or_path) / T2S_SUBFOLDER
    return folder if (folder / "config.json").is_file() else None


def check_t2s(t2s: TextToSemantic, pipe) -> None:
    """Refuse a T2S model whose semantic tokens are not those of the pipeline's SoundStorm model."""
    tokenizer = pipe.semantic_tokenizer
    if t2s.config.semantic_vocab_size != tokenizer.vocab_size or not np.isclose(t2s.config.semantic_frame_rate, tokenizer.frame_rate):
        raise ValueError(
            f"The T2S model writes {t2s.config.semantic_vocab_size} semantic ids at {t2s.config.semantic_frame_rate} Hz, "
            f"the pipeline's semantic tokenizer has {tokenizer.vocab_size} at {tokenizer.frame_rate} Hz."
        )
