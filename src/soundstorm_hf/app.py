"""The Gradio demo (the Hugging Face Space and `soundstorm-hf demo`): voice conversion, text to speech, dialogue.

Each tab shows what SoundStorm did, not only what it produced: spectrograms of prompt and result, the forward pass
that fixed each token (the level-by-level parallel decoding), and the time taken. Inputs are limited in size and
duration and requests are queued one at a time, so one visitor cannot hold a shared CPU server; every problem with
an input reaches the user as a one-line `gr.Error`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile
import torch
from matplotlib.figure import Figure

from .audio import AudioSource, stream_waveform
from .loading import MAX_SEED
from .streaming import AudioStream
from .text import TextToSpeech, parse_dialogue

EXAMPLES = Path(__file__).parent / "examples"
SPEAKERS = ("A", "B")
MAX_PAUSE_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a shared server."""

    max_seconds: float = 30.0  # content audio, and each voice prompt
    max_file_mb: float = 10.0
    max_sampling_rate: int = 192_000  # with max_seconds, bounds what one upload decodes to
    max_characters: int = 500  # text, or a whole dialogue transcript
    concurrency: int = 1  # requests generating at once
    queue_size: int = 16  # requests waiting; more are turned away


def spectrograms(clips: list[tuple[str, np.ndarray, int]]) -> Figure:
    """One log-power spectrogram per `(title, audio, sampling_rate)`, stacked."""
    figure = Figure(figsize=(9, 2.2 * len(clips)), layout="constrained")
    for axis, (title, audio, rate) in zip(figure.subplots(len(clips), 1, squeeze=False)[:, 0], clips):
        with np.errstate(divide="ignore"):  # pauses are digital silence: log of 0 is shown as the floor
            axis.specgram(audio, NFFT=512, Fs=rate, noverlap=384, cmap="magma")
        axis.set(title=title, ylabel="Hz")
    axis.set_xlabel("seconds")
    return figure


def window_starts(trace: torch.Tensor) -> list[int]:
    """First frames of the windows after the first: each window's passes come after all of the one before."""
    first, last = trace.min(dim=0).values, trace.max(dim=0).values
    return [int(frame) for frame in torch.nonzero(first[1:] > last[:-1]).flatten() + 1]


def trace_picture(trace: torch.Tensor) -> Figure:
    """Levels x frames, coloured by the forward pass that fixed each token; white lines between windows."""
    figure = Figure(figsize=(9, 2.8), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(
        np.ma.masked_less(trace.numpy(), 0), aspect="auto", interpolation="nearest", cmap="viridis", origin="lower"
    )
    for boundary in window_starts(trace):
        axis.axvline(boundary - 0.5, color="white", linewidth=1)
    axis.set(
        xlabel="acoustic frame",
        ylabel="RVQ level",
        yticks=range(trace.shape[0]),
        yticklabels=range(1, trace.shape[0] + 1),
        title="Parallel decoding: the forward pass at which each token was fixed",
    )
    figure.colorbar(image, ax=axis, label="forward pass")
    return figure


def pcm16(audio: np.ndarray) -> np.ndarray:
    """16-bit samples, as the player gets them (gradio would rescale float chunks each to its own peak)."""
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


class Demo:
    """The handlers behind the tabs, over one loaded pipeline."""

    def __init__(self, pipe, limits: Limits = Limits(), t2s=None):
        self.pipe, self.limits = pipe, limits
        self.text = TextToSpeech(pipe, max_characters=limits.max_characters, t2s=t2s)

    def read(self, path: str | None, what: str) -> tuple[np.ndarray, int]:
        """A checked mono waveform from an uploaded or recorded file, or a `gr.Error` saying what is wrong.

        A few MB of FLAC can hold hours of silence: the duration is taken from the header and decoding stops at
        the limit, so no upload costs more memory than `max_seconds` at `max_sampling_rate`.
        """
        if not path:
            raise gr.Error(f"No {what}: upload a file, record one, or pick an example.")
        size_mb = os.path.getsize(path) / 2**20
        if size_mb > self.limits.max_file_mb:
            raise gr.Error(f"The {what} file is too large: {size_mb:.1f} MB, at most {self.limits.max_file_mb} MB.")
        try:
            rate = soundfile.info(path).samplerate
        except (soundfile.LibsndfileError, RuntimeError, TypeError):
            raise gr.Error(f"The {what} is not an audio file this demo can read (WAV, FLAC, OGG or MP3).") from None
        if rate > self.limits.max_sampling_rate:
            raise gr.Error(f"The {what} has {rate} Hz samples, at most {self.limits.max_sampling_rate} Hz.")
        try:
            source = AudioSource(path, name=f"The {what}", max_seconds=self.limits.max_seconds)
            return np.concatenate(list(stream_waveform(source))), rate  # (samples,)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    def settings(self, iterations, temperature, guidance_scale, seed) -> dict:
        """The decoding settings, checked: the API takes any JSON, which the sliders' bounds do not stop (NaN, a
        string, a seed of 2**70 or 1.5)."""
        levels = self.pipe.model.config.num_levels
        return {
            "steps_per_level": [int(checked_number(iterations, "Level-1 iterations"))] + [1] * (levels - 1),
            "temperature": checked_number(temperature, "Temperature"),
            "guidance_scale": checked_number(guidance_scale, "Guidance scale"),
            "seed": int(checked_number(seed, "Seed", maximum=MAX_SEED, whole=True)),
        }

    def run(self, generate, prompts: list[tuple[str, np.ndarray, int]], settings: dict, notes: str = ""):
        """Runs `generate(**settings)`, an `AudioStream` or the pipeline's output dict with its trace, yielding the
        tab's five outputs: the audio block by block as it is decoded, to the live player (which starts at the
        first), then the whole result, the pictures and the time taken."""
        start, rate = time.perf_counter(), self.pipe.sampling_rate
        blocks, first_audio = [], None
        try:
            output = generate(return_trace=True, **settings)
            for block in output if isinstance(output, AudioStream) else [output["audio"]]:
                first_audio = time.perf_counter() - start if first_audio is None else first_audio
                blocks.append(block)
                yield (rate, pcm16(block)), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        except ValueError as error:
            raise gr.Error(str(error)) from None
        seconds = time.perf_counter() - start
        audio = np.concatenate(blocks)
        trace = output.trace if isinstance(output, AudioStream) else output.get("trace")  # dialogue: none yet
        duration = len(audio) / rate
        timing = (
            f"**{seconds:.2f} s** to generate {duration:.2f} s of audio (real-time factor {seconds / duration:.2f}; "
            f"first audio after {first_audio:.2f} s)"
        )
        if trace is not None:
            timing += f", {int(trace.max()) + 1} forward passes in {len(window_starts(trace)) + 1} window(s)."
        figure = spectrograms(prompts + [("result", audio, rate)])
        yield None, (rate, pcm16(audio)), figure, None if trace is None else trace_picture(trace), timing + notes

    def convert(self, content, prompt, iterations, temperature, guidance_scale, seed):
        content, prompt = self.read(content, "content audio"), self.read(prompt, "voice prompt")
        settings = self.settings(iterations, temperature, guidance_scale, seed)
        stream = lambda **kw: self.pipe.stream(content, voice_prompt=prompt, **kw)  # noqa: E731
        yield from self.run(stream, [("voice prompt", *prompt)], settings)

    def tts(self, text, prompt, iterations, temperature, guidance_scale, seed):
        if not text or not text.strip():
            raise gr.Error("No text: type something to say.")
        prompt = self.read(prompt, "voice prompt")
        settings = self.settings(iterations, temperature, guidance_scale, seed)
        yield from self.run(lambda **kw: self.text.stream(text, prompt, **kw), [("voice prompt", *prompt)], settings)

    def dialogue(self, transcript, prompt_a, prompt_b, pause, iterations, temperature, guidance_scale, seed):
        if not transcript or not transcript.strip():
            raise gr.Error("No transcript: write turns like [A] Hello. [B] Hi!")
        pause = checked_number(pause, "Pause between turns", MAX_PAUSE_SECONDS)
        paths = dict(zip(SPEAKERS, (prompt_a, prompt_b)))
        try:  # a transcript naming an unknown speaker is refused before any prompt is read
            used = {turn.speaker for turn in parse_dialogue(transcript, speakers=SPEAKERS)}
        except ValueError as error:
            raise gr.Error(str(error)) from None
        prompts = {name: self.read(paths[name], f"voice prompt of [{name}]") if name in used else None for name in SPEAKERS}
        settings = self.settings(iterations, temperature, guidance_scale, seed)
        timeline = []  # filled turn by turn as the stream is played

        def generate(**kw):
            stream = self.text.stream_dialogue(transcript, prompts, pause_seconds=pause, **kw)
            timeline.append(stream.timeline)
            return stream

        shown = [(f"voice prompt [{name}]", *prompt) for name, prompt in prompts.items() if prompt is not None]
        for outputs in self.run(generate, shown, settings):
            if outputs[0] is not None:  # a turn for the live player
                yield outputs
                continue
            _, audio, figure, trace, timing = outputs
            lines = "\n".join(
                f"| {turn['speaker']} | {turn['start']:.2f} | {turn['end']:.2f} | {turn['text']} |" for turn in timeline[0]
            )
            yield None, audio, figure, trace, timing + "\n\n| speaker | start (s) | end (s) | text |\n|---|---|---|---|\n" + lines


def checked_number(value, label: str, maximum: float | None = None, whole: bool = False) -> float:
    """`value` if it is a finite number >= 0 (a whole one if `whole`), at most `maximum`; else a `gr.Error`."""
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not number or value < 0 or (whole and value != int(value)) or (maximum is not None and value > maximum):
        bound = "" if maximum is None else f" up to {maximum if maximum < 2**32 else '2**64 - 1'}"
        raise gr.Error(f"{label} must be a {'whole ' if whole else ''}number from 0{bound}, got {value!r}.")
    return value


def example_files() -> dict[str, str]:
    """The bundled clips by name, real recordings (`real_*`) before espeak-ng ones; `[real_]content_*.wav` say
    something, `[real_]voice_*.wav` are voice prompts (`examples/README.md` lists their sources)."""
    paths = sorted(EXAMPLES.glob("*.wav"), key=lambda path: (not path.stem.startswith("real_"), path.stem))
    return {path.stem: str(path) for path in paths}


def bundled(kind: str) -> list[str]:
    """The bundled clips of one kind, `"content"` or `"voice"`, real recordings first."""
    return [path for name, path in example_files().items() if name.removeprefix("real_").startswith(f"{kind}_")]


def conversion_examples() -> list[list[str]]:
    """The demo's (content, voice prompt) pairs, led by the README's: a LibriVox reader in an Italian voice."""
    return [[content, voice] for content in bundled("content") for voice in bundled("voice")]


def controls(default_iterations: int, guidance: bool):
    """The decoding settings every tab shares; the guidance slider only for a model trained for guidance (with the
    prompt dropped at times), where it means something."""
    with gr.Accordion("Decoding settings", open=False):
        with gr.Row():
            iterations = gr.Slider(1, 32, value=default_iterations, step=1, label="Level-1 iterations")
            temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Temperature")
            scale = gr.Slider(1.0, 5.0, value=1.0, step=0.1, label="Guidance scale (1 = off)", visible=guidance)
            seed = gr.Number(value=0, step=1, label="Seed")  # no precision: the handler checks what the API sends
    return [iterations, temperature, scale, seed]


def outputs():
    live = gr.Audio(
        label="Live: plays while it is generated",
        streaming=True,
        autoplay=True,
        interactive=False,
        elem_id="live-audio",
        waveform_options=gr.WaveformOptions(show_recording_waveform=False),
    )
    audio = gr.Audio(
        label="Result",
        type="numpy",
        interactive=False,
        elem_id="result-audio",
        waveform_options=gr.WaveformOptions(show_recording_waveform=False),  # the browser's own <audio> player
    )
    timing = gr.Markdown(elem_id="timing")
    spectrogram = gr.Plot(label="Spectrograms")
    trace = gr.Plot(label="Parallel decoding")
    return [live, audio, spectrogram, trace, timing]


def audio_input(label: str, elem_id: str):
    return gr.Audio(label=label, sources=["upload", "microphone"], type="filepath", elem_id=elem_id)


def build_demo(pipe, limits: Limits = Limits(), t2s=None) -> gr.Blocks:
    """The Space's `gr.Blocks`, queued with `limits`; handlers run under ZeroGPU when the `spaces` package has it.
    Text becomes semantic tokens through the T2S model `t2s` when given, else the offline front end."""
    demo_handlers = Demo(pipe, limits, t2s)
    try:
        import spaces  # Hugging Face's ZeroGPU helper: present on Spaces, optional elsewhere

        on_gpu = getattr(spaces, "GPU", lambda function: function)
    except ImportError:
        on_gpu = lambda function: function  # noqa: E731
    convert, tts, dialogue = (on_gpu(f) for f in (demo_handlers.convert, demo_handlers.tts, demo_handlers.dialogue))
    steps = pipe.model.generation_config.steps_per_level
    default_iterations = steps[0] if steps else 16
    guidance = pipe.model.config.trained_for_guidance
    voices = bundled("voice")
    limit_text = (
        f"Inputs up to {limits.max_seconds:.0f} s and {limits.max_file_mb:.0f} MB; text up to "
        f"{limits.max_characters} characters. Requests run {limits.concurrency} at a time; a request that waits "
        "shows its place in the queue and the expected wait where its result will appear."
    )

    with gr.Blocks(title="SoundStorm") as demo:
        gr.Markdown(
            "# SoundStorm\nSemantic tokens (what is said) + a voice prompt (who says it) → codec tokens, decoded "
            "level by level in parallel. " + limit_text
        )
        with gr.Tab("Voice conversion"):
            with gr.Row():
                content = audio_input("Content (what is said)", "content-audio")
                prompt = audio_input("Voice prompt (who says it, a few seconds)", "convert-prompt")
            settings = controls(default_iterations, guidance)
            gr.Examples(conversion_examples(), inputs=[content, prompt], label="Bundled examples")
            button = gr.Button("Convert", variant="primary", elem_id="convert-button")
            results = outputs()
            button.click(convert, [content, prompt, *settings], results, api_name="convert")
        with gr.Tab("Text to speech"):
            text = gr.Textbox(label="Text", lines=3, max_length=limits.max_characters, value="The quick brown fox jumps over the lazy dog.")
            prompt = audio_input("Voice prompt", "tts-prompt")
            gr.Examples([[v] for v in voices], inputs=[prompt], label="Bundled voices")
            settings = controls(default_iterations, guidance)
            button = gr.Button("Speak", variant="primary")
            results = outputs()
            button.click(tts, [text, prompt, *settings], results, api_name="tts")
        with gr.Tab("Dialogue"):
            transcript = gr.Textbox(
                label="Transcript ([A] ... [B] ...)",
                lines=4,
                max_length=limits.max_characters,
                value="[A] Hello there, how are you? [B] Very well, thank you. [A] Glad to hear it.",
            )
            with gr.Row():
                prompt_a = audio_input("Voice of [A]", "dialogue-prompt-a")
                prompt_b = audio_input("Voice of [B]", "dialogue-prompt-b")
            gr.Examples([voices[:2], voices[1::-1]] if len(voices) >= 2 else [], inputs=[prompt_a, prompt_b])
            pause = gr.Slider(0.0, MAX_PAUSE_SECONDS, value=0.4, step=0.05, label="Pause between turns (s)")
            settings = controls(default_iterations, guidance)
            button = gr.Button("Generate dialogue", variant="primary")
            results = outputs()
            button.click(dialogue, [transcript, prompt_a, prompt_b, pause, *settings], results, api_name="dialogue")
    return demo.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)


def launch_demo(pipe, limits: Limits = Limits(), t2s=None, **launch_kwargs) -> gr.Blocks:
    """Builds and launches the demo, refusing uploads over the limit at the server; returns it (`.close()` stops it)."""
    demo = build_demo(pipe, limits, t2s)
    demo.launch(max_file_size=f"{limits.max_file_mb:g}mb", **launch_kwargs)
    return demo
