"""`soundstorm-hf`: convert voices, speak text and dialogues, run the demo, prepare data, train, fine-tune on a voice,
and push models.

Mistakes a user can make (a missing file, an unwritable output, a flag that needs another) are reported as one line
on stderr, named by the flag, before the model is loaded or anything is generated (exit status 1). Outputs are
written atomically: Ctrl-C (exit 130) or SIGTERM (143) leaves an existing output as it was. Torch and transformers
are imported only by the commands that need them, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from .loading import MAX_SEED, MODEL_ENV, UserError, first_line, load_pipeline, model_t2s, resolve_model

# Longest pause between dialogue turns: more is a typo (1e9 s would need terabytes of silence).
MAX_PAUSE_SECONDS = 60.0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except an unset one, whose help says what happens then."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False, []) else super()._get_help_string(action)


def existing_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise UserError(f"{flag}: file not found: {path}")


def usable_audio(path: str | None, flag: str) -> None:
    """Refuses a missing, unreadable or empty file before the model is loaded (without reading the samples)."""
    import soundfile

    existing_file(path, flag)
    if path is None:
        return
    try:
        frames = soundfile.info(path).frames
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        raise UserError(f"{flag}: not an audio file soundfile can read: {path}") from None
    if frames == 0:
        raise UserError(f"{flag}: the audio file is empty: {path}")


def writable_output(path: str, inputs: dict[str, str | None] | None = None) -> None:
    """Opens `path` for appending (then removes it if it was new): the one test that holds for every user and OS;
    the output is written beside it under a temporary name, so its folder must be writable too. Refuses an output
    that is one of the `inputs` (`{flag: path}`), also through a link."""
    import soundfile

    target = Path(path)
    for flag, source in (inputs or {}).items():
        if source is not None and target.exists() and os.path.samefile(source, target):
            raise UserError(f"OUTPUT: {path} is also {flag}: write the output to another file")
    if target.suffix[1:].upper() not in soundfile.available_formats():
        raise UserError(f"OUTPUT: {path} has no audio extension soundfile can write (e.g. .wav, .flac)")
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as error:
        raise UserError(f"OUTPUT: cannot write {path}: {error.strerror}") from None
    if not existed:
        target.unlink()
    if not os.access(target.parent, os.W_OK):
        raise UserError(f"OUTPUT: cannot create files in {target.parent}, where {target.name} is written")


def generation_settings(args, voice_prompts: list[str]) -> dict:
    """The generation flags that were given (the rest keep the model's generation config), and a progress bar
    when stderr is a terminal."""
    if args.guidance_scale not in (None, 1.0) and not voice_prompts:
        raise UserError("--guidance-scale needs --voice-prompt: guidance contrasts generation with and without it")
    if args.compile and not (args.device or "").startswith("cuda"):
        raise UserError("--compile records CUDA graphs: it needs --device cuda (on CPU, run without it)")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must lie in [0, 2**64 - 1], got {args.seed}")
    settings = {"seed": args.seed, "temperature": args.temperature, "guidance_scale": args.guidance_scale}
    settings = {key: value for key, value in settings.items() if value is not None}
    if args.keep_level:
        settings["match_loudness"] = False
    return {**settings, "show_progress": sys.stderr.isatty()}  # a bar on a terminal, none in logs and pipes


def prepared_pipeline(args, settings: dict):
    """Loads the model once every flag is checked; `--compile` records CUDA graphs of the decoding pass."""
    if args.compile:
        import torch

        if not torch.cuda.is_available():
            raise UserError("--compile: no CUDA device is available")
    pipe = load_pipeline(args.model, args.device, args.adapter)
    if args.compile:
        pipe.model.model.compile(mode="reduce-overhead", dynamic=False)
    if args.iterations is not None:
        settings["steps_per_level"] = [args.iterations] + [1] * (pipe.model.config.num_levels - 1)
    return pipe


def report(path: str, seconds: float, sampling_rate: int, started: float) -> None:
    print(f"wrote {path}: {seconds:.2f} s at {sampling_rate} Hz, generated in {time.perf_counter() - started:.1f} s")


def run_convert(args) -> None:
    usable_audio(args.input, "INPUT")
    usable_audio(args.voice_prompt, "--voice-prompt")
    if args.output != "-":
        writable_output(args.output, {"INPUT": args.input, "--voice-prompt": args.voice_prompt})
    settings = generation_settings(args, [args.voice_prompt] if args.voice_prompt else [])
    pipe = prepared_pipeline(args, settings)
    started = time.perf_counter()
    if args.output == "-":
        stream_to_stdout(pipe.stream(args.input, voice_prompt=args.voice_prompt, **settings), started)
        return
    output = pipe.convert_to_file(args.input, args.output, voice_prompt=args.voice_prompt, **settings)  # streamed
    report(args.output, output["num_samples"] / output["sampling_rate"], output["sampling_rate"], started)


def stream_to_stdout(stream, started: float) -> None:
    """Writes a WAV stream to standard output as it is generated (`... - | aplay` plays it meanwhile); the report
    goes to stderr. A reader that stops early (closing the pipe) stops the generation."""
    from .streaming import write_wav_stream

    try:
        num_samples = write_wav_stream(stream, sys.stdout.buffer, stream.sampling_rate)
    except BrokenPipeError:
        stream.close()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        raise UserError("OUTPUT: the reader of standard output closed it") from None
    seconds = time.perf_counter() - started
    print(f"streamed {num_samples / stream.sampling_rate:.2f} s at {stream.sampling_rate} Hz to standard output, "
          f"generated in {seconds:.1f} s", file=sys.stderr)


def text_speaker(args, settings: dict):
    """The `TextToSpeech` of tts and dialogue: through the T2S model that `find_t2s` picks from `--t2s` and the model
    folder, as in Python (`TextToSpeech.from_pretrained`). A missing or mismatched T2S is a `UserError`."""
    from .text import TextToSpeech
    from .text.frontend import load_t2s

    if args.t2s not in (None, "none") and not Path(args.t2s).is_dir():
        raise UserError(f"--t2s: T2S model folder not found: {args.t2s}")
    pipe = prepared_pipeline(args, settings)
    model = resolve_model(args.model)
    try:
        t2s = load_t2s(model, args.t2s, args.device)
        return TextToSpeech(pipe, engine=args.engine, max_characters=args.max_characters, t2s=t2s)
    except (OSError, ValueError) as error:
        where = args.t2s or f"{model}/t2s"
        raise UserError(f"--t2s: cannot use {where}: {first_line(error)}") from None


def run_tts(args) -> None:
    usable_audio(args.voice_prompt, "--voice-prompt")
    if args.output != "-":
        writable_output(args.output, {"--voice-prompt": args.voice_prompt})
    settings = generation_settings(args, [args.voice_prompt] if args.voice_prompt else [])
    speaker = text_speaker(args, settings)
    started = time.perf_counter()
    if args.output == "-":  # a short first window, so that playback starts soon
        stream_to_stdout(speaker.stream(args.text, args.voice_prompt, **settings), started)
        return
    # Written as it is generated, in the windows of the whole call: the samples `TextToSpeech.tts` returns.
    stream = speaker.stream(args.text, args.voice_prompt, first_window_seconds=None, **settings)
    num_samples = stream.save(args.output)
    report(args.output, num_samples / stream.sampling_rate, stream.sampling_rate, started)


def run_dialogue(args) -> None:
    from .text import parse_dialogue

    existing_file(args.transcript, "TRANSCRIPT")
    if not 0 <= args.pause <= MAX_PAUSE_SECONDS:  # NaN fails too
        raise UserError(f"--pause must lie in [0, {MAX_PAUSE_SECONDS:g}] seconds, got {args.pause}")
    prompts = {}
    for item in args.speaker:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise UserError(f"--speaker wants NAME=FILE (e.g. A=alice.wav), got {item!r}")
        usable_audio(path, f"--speaker {name}")
        prompts[name] = path
    transcript = Path(args.transcript).read_text()
    parse_dialogue(transcript, speakers=list(prompts))  # a bad transcript is refused before the model loads
    if args.output != "-":
        inputs = {"TRANSCRIPT": args.transcript, **{f"--speaker {name}": path for name, path in prompts.items()}}
        writable_output(args.output, inputs)
    settings = generation_settings(args, list(prompts.values()))
    speaker = text_speaker(args, settings)
    started = time.perf_counter()
    stream = speaker.stream_dialogue(transcript, prompts, pause_seconds=args.pause, **settings)  # turn by turn
    if args.output == "-":
        stream_to_stdout(stream, started)
    else:
        num_samples = stream.save(args.output)
    for turn in stream.timeline:  # on stderr when stdout carries the audio
        line = f"[{turn['speaker']}] {turn['start']:7.2f} - {turn['end']:7.2f} s  {turn['text']}"
        print(line, file=sys.stderr if args.output == "-" else sys.stdout)
    if args.output != "-":
        report(args.output, num_samples / stream.sampling_rate, stream.sampling_rate, started)


def run_demo(args) -> None:
    try:
        from .app import Limits, launch_demo
    except ImportError as error:
        raise UserError(f"the demo needs gradio ({error}): pip install 'soundstorm-hf[space]'") from None
    pipe = load_pipeline(args.model, args.device)
    limits = Limits(max_seconds=args.max_seconds, max_file_mb=args.max_file_mb)
    launch_demo(pipe, limits, model_t2s(args.model, pipe), server_name=args.host, server_port=args.port)


def run_training(args, extra: list[str]) -> None:
    """Runs `soundstorm_hf.training.<command>`'s command line with the remaining arguments (its own `--help` lists
    them): usage errors exit 2, a stopped run with its status, without a traceback."""
    module = importlib.import_module(f".training.{args.command}", __package__)
    module.cli(extra, prog=f"soundstorm-hf {args.command}")


def run_push(args) -> None:
    """Uploads in one commit; a missing token, offline mode or an unreachable Hub is one line, at once."""
    if args.space is not None:
        return push_space(args)
    if args.folder is None or args.repo_id is None:
        raise UserError("push needs FOLDER and REPO_ID (or --space OWNER/NAME for the demo)")
    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"FOLDER: {folder} is not a saved model folder (no config.json)")
    url = upload(args, folder, args.repo_id, "model")
    print(f"pushed {folder} to {url}")


def push_space(args) -> None:
    """Assembles the demo's Space folder serving --model (`soundstorm_hf.space`) and uploads it, or with --dry-run
    only writes it."""
    import tempfile

    from .pipeline import DEFAULT_MODEL_NAME
    from .space import assemble_space

    if args.folder is not None or args.repo_id is not None:
        raise UserError("--space takes no FOLDER or REPO_ID: the Space is --space, the model it serves --model")
    model = args.model or DEFAULT_MODEL_NAME
    if model != DEFAULT_MODEL_NAME and (model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).exists()):
        raise UserError(f"--model: a Space serves a model from the Hub (OWNER/NAME) or 'default', not a folder: {model}")
    if args.wheel is not None and not Path(args.wheel).is_file():
        raise UserError(f"--wheel: file not found: {args.wheel}")
    try:
        if args.dry_run is not None:
            folder = assemble_space(args.dry_run, model=model, wheel=args.wheel)
            print(f"wrote the Space folder {folder} (serving {model}); nothing was uploaded")
            return
        with tempfile.TemporaryDirectory() as scratch:
            folder = assemble_space(Path(scratch) / "space", model=model, wheel=args.wheel)
            url = upload(args, folder, args.space, "space")
    except (FileExistsError, FileNotFoundError) as error:
        raise UserError(first_line(error)) from None
    print(f"pushed the Space (serving {model}) to {url}")


def upload(args, folder: Path, repo_id: str, repo_type: str) -> str:
    """`folder` uploaded to the Hub repository `repo_id` (created if missing); the commit's address."""
    import huggingface_hub

    token = args.token or huggingface_hub.get_token()
    if token is None:
        raise UserError("pushing needs a Hub token: pass --token, set HF_TOKEN or run `hf auth login`")
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(
            repo_id, repo_type=repo_type, private=args.private, exist_ok=True,
            space_sdk="gradio" if repo_type == "space" else None,
        )  # fmt: skip
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=args.message
        )
    except Exception as error:  # offline mode, no network, refused or unauthorized: the Hub client's many types
        raise UserError(f"cannot push to {api.endpoint}: {type(error).__name__}: {first_line(error)}") from None
    return getattr(info, "commit_url", repo_id)


def build_parser() -> argparse.ArgumentParser:
    formatter = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="soundstorm-hf", description=__doc__.split("\n\n")[0].replace("\n", " "), formatter_class=formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument(
        "--model",
        default=None,
        help=f"Model folder or Hub id, with its tokenizers recorded. Default: ${MODEL_ENV}, else the bundled 'default'.",
    )
    model.add_argument("--device", default=None, help="Torch device, e.g. cuda. Default: cpu.")
    generation = argparse.ArgumentParser(add_help=False, parents=[model])
    generation.add_argument(
        "--adapter", default=None, help="LoRA adapter (folder or Hub id) from `finetune`, trained on --model. Default: none."
    )
    generation.add_argument("--seed", type=int, default=None, help="Seed for reproducible sampling. Default: unseeded.")
    generation.add_argument(
        "--iterations", type=int, default=None, help="Level-1 iterations (finer levels take 1). Default: the model's."
    )
    generation.add_argument("--temperature", type=float, default=None, help="Sampling temperature. Default: the model's.")
    generation.add_argument(
        "--guidance-scale", type=float, default=None, help="Classifier-free guidance scale (> 1; needs a voice prompt). Default: the model's."
    )
    generation.add_argument(
        "--compile", action="store_true", help="Replay the decoding pass as CUDA graphs (GPU only; first call compiles)."
    )
    generation.add_argument(
        "--keep-level", action="store_true",
        help="Keep the level the model generated instead of matching the voice prompt's (or the content's) speech level.",
    )
    text = argparse.ArgumentParser(add_help=False)
    text.add_argument("--engine", choices=["espeak-ng", "flite"], default=None, help="Synthesizer of the content. Default: the first installed.")
    text.add_argument("--max-characters", type=int, default=5000, help="Longest text accepted.")
    text.add_argument(
        "--t2s", default=None,
        help="Text-to-semantic model folder, or 'none' for the offline front end. Default: the model folder's t2s/ "
             "when it has one, else the front end (--engine).",
    )

    def command(name, help, parents=()):
        return commands.add_parser(name, help=help, description=help, parents=list(parents), formatter_class=formatter)

    convert = command("convert", "Say what INPUT says in the voice of --voice-prompt and write OUTPUT.", [generation])
    convert.add_argument("input", help="Audio file whose content (what is said) is kept.")
    convert.add_argument(
        "output", help="Audio file to write at the codec's rate (.wav, .flac, ...), or - for a WAV stream on stdout."
    )
    convert.add_argument("--voice-prompt", default=None, help="A few seconds of the target voice. Default: unprompted.")
    convert.set_defaults(run=run_convert)

    tts = command("tts", "Speak TEXT (rendered offline, then re-voiced) in the voice of --voice-prompt.", [generation, text])
    tts.add_argument("text", help="What to say.")
    tts.add_argument("output", help="Audio file to write at the codec's rate (.wav, .flac, ...), or - for a WAV stream on stdout.")
    tts.add_argument("--voice-prompt", default=None, help="A few seconds of the target voice. Default: unprompted.")
    tts.set_defaults(run=run_tts)

    dialogue = command("dialogue", "Speak a transcript '[A] Hello. [B] Hi!' with one voice per speaker.", [generation, text])
    dialogue.add_argument("transcript", help="Text file with the turns, each starting with a speaker tag like [A].")
    dialogue.add_argument("output", help="Audio file to write at the codec's rate.")
    dialogue.add_argument(
        "--speaker", action="append", default=[], required=True, metavar="NAME=FILE", help="A speaker's voice prompt. Required, once for each speaker."
    )
    dialogue.add_argument("--pause", type=float, default=0.4, help="Silence between turns, in seconds.")
    dialogue.set_defaults(run=run_dialogue, voice_prompt=None)

    demo = command("demo", "Run the Gradio demo (the Space) locally.", [model])
    demo.add_argument("--host", default="127.0.0.1", help="Address to serve on.")
    demo.add_argument("--port", type=int, default=7860, help="Port to serve on.")
    demo.add_argument("--max-seconds", type=float, default=30.0, help="Longest input audio accepted.")
    demo.add_argument("--max-file-mb", type=float, default=10.0, help="Largest upload accepted.")
    demo.set_defaults(run=run_demo)

    for name, help in (
        ("prepare", "Tokenize an audio dataset into training tokens (--help lists the flags)."),
        ("train", "Train with Accelerate on a token dataset (--help lists the flags)."),
        ("finetune", "Fine-tune on one speaker's recordings (--help lists the flags)."),
    ):
        sub = commands.add_parser(name, help=help, description=help, add_help=False)
        sub.set_defaults(run=run_training)

    push = command("push", "Upload a saved model folder, or the demo as a Space (--space), to the Hugging Face Hub.")
    push.add_argument(
        "folder", nargs="?", help="Folder written by save_pretrained (model, tokenizers, generation config)."
    )
    push.add_argument("repo_id", nargs="?", help="Hub repository, e.g. user/soundstorm-small (created if missing).")
    push.add_argument(
        "--space", default=None, metavar="OWNER/NAME",
        help="Push the demo as a self-contained Space (app, the package as a wheel, front matter) instead of a model. "
             "Default: push FOLDER as a model.",
    )  # fmt: skip
    push.add_argument(
        "--model", default=None, help="With --space: the Hub id of the model the Space serves. Default: the bundled 'default'."
    )
    push.add_argument("--wheel", default=None, help="With --space: the package wheel to ship. Default: built from this checkout.")
    push.add_argument(
        "--dry-run", default=None, metavar="FOLDER", help="With --space: only write the Space folder here; upload nothing. Default: upload."
    )
    push.add_argument("--private", action="store_true", help="Create the repository as private.")
    push.add_argument("--message", default="Upload SoundStorm model", help="Commit message.")
    push.add_argument("--token", default=None, help="Hub token. Default: $HF_TOKEN or the logged-in one.")
    push.set_defaults(run=run_push)
    return parser


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: unwinds like an error, so that partial outputs are removed on the way out."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def stop(signal_number: int, frame) -> None:
    raise Stopped(signal_number)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command not in ("prepare", "train", "finetune") and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("prepare", "train", "finetune"):
        args.run(args, extra)  # their own signal handling and exit statuses; a failure deep in training keeps its traceback
        return
    format_warning, warnings.formatwarning = warnings.formatwarning, one_line_warning  # no echo of source lines
    signals = (signal.SIGINT, signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
    previous = [signal.signal(number, stop) for number in signals] if in_main_thread else []
    try:
        try:
            args.run(args)
        except ValueError as error:  # the pipeline's own checks of the inputs (silent audio, short prompt, ...)
            raise UserError(str(error)) from None
    except UserError as error:
        print(f"soundstorm-hf {args.command}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (Stopped, KeyboardInterrupt) as stopped:
        number = getattr(stopped, "signal_number", signal.SIGINT)
        print(f"soundstorm-hf {args.command}: stopped by {signal.Signals(number).name}", file=sys.stderr)
        sys.exit(128 + number)
    finally:
        warnings.formatwarning = format_warning
        for number, handler in zip(signals, previous):
            signal.signal(number, handler)


if __name__ == "__main__":
    main()
