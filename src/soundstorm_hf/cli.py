"""`soundstorm-hf`: convert voices, speak text and dialogues, run the demo, prepare data, train, fine-tune on a voice,
and push models.

Mistakes a user can make (a missing file, an unwritable output, a flag that needs another) are reported as one line
on stderr, named by the flag, before the model is loaded or anything is generated.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "default"
MODEL_ENV = "SOUNDSTORM_MODEL"
BUNDLED_DEFAULT = Path(__file__).parent / "default"
TRAINING_SCRIPTS = Path(__file__).resolve().parents[2] / "training"  # the repository's, beside src/


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except an unset one, whose help says what happens then."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False, []) else super()._get_help_string(action)


class UserError(Exception):
    """A problem with what the user asked for: printed as one line, without a traceback."""


def resolve_model(name: str | None) -> str:
    """`name`, else `$SOUNDSTORM_MODEL`, else the bundled default; a folder-like name must exist."""
    name = name or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        if not (BUNDLED_DEFAULT / "config.json").exists():
            raise UserError(
                f"the bundled default model is not built yet ({BUNDLED_DEFAULT} has no config.json): pass --model "
                f"with a model folder or Hub id, or set {MODEL_ENV}"
            )
        return str(BUNDLED_DEFAULT)
    looks_like_folder = name.startswith((".", "/", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name
    if looks_like_folder and not Path(name).expanduser().is_dir():
        raise UserError(f"--model: model folder not found: {name}")
    return str(Path(name).expanduser()) if looks_like_folder else name


def load_pipeline(name: str | None = None, device: str | None = None, adapter: str | None = None):
    """The pipeline named by `name` / `$SOUNDSTORM_MODEL` / the default (with a LoRA `adapter` merged in), or a
    `UserError` saying why not."""
    from transformers.utils import logging

    from .pipeline import SoundStormPipeline  # heavy imports only once the arguments are valid

    logging.disable_progress_bar()  # errors after loading stay one line

    path = resolve_model(name)
    try:
        return SoundStormPipeline.from_pretrained(path, device=device, adapter=adapter)
    except (OSError, ValueError) as error:
        raise UserError(f"--model: cannot load {path}: {str(error).splitlines()[0]}") from None


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


def writable_output(path: str) -> None:
    """Opens `path` for appending (then removes it if it was new): the one test that holds for every user and OS."""
    import soundfile

    target = Path(path)
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


def generation_settings(args, voice_prompts: list[str]) -> dict:
    """The generation flags that were given (the rest keep the model's generation config), and a progress bar
    when stderr is a terminal."""
    if args.guidance_scale not in (None, 1.0) and not voice_prompts:
        raise UserError("--guidance-scale needs --voice-prompt: guidance contrasts generation with and without it")
    if args.compile and not (args.device or "").startswith("cuda"):
        raise UserError("--compile records CUDA graphs: it needs --device cuda (on CPU, run without it)")
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


def write(output: dict, path: str, started: float) -> None:
    import soundfile

    soundfile.write(path, output["audio"], output["sampling_rate"])
    report(path, len(output["audio"]) / output["sampling_rate"], output["sampling_rate"], started)


def run_convert(args) -> None:
    usable_audio(args.input, "INPUT")
    usable_audio(args.voice_prompt, "--voice-prompt")
    if args.output != "-":
        writable_output(args.output)
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
    """The `TextToSpeech` of tts and dialogue: through the T2S model of `--t2s`, or else of the model folder's
    `t2s/`, or the offline front end (always with `--t2s none`). A missing or mismatched T2S is a `UserError`."""
    from .text import TextToSemantic, TextToSpeech
    from .text.frontend import t2s_beside

    if args.t2s not in (None, "none") and not Path(args.t2s).is_dir():
        raise UserError(f"--t2s: T2S model folder not found: {args.t2s}")
    pipe = prepared_pipeline(args, settings)
    path = None if args.t2s == "none" else args.t2s or t2s_beside(resolve_model(args.model))
    try:
        t2s = TextToSemantic.from_pretrained(path).to(args.device) if path is not None else None
        return TextToSpeech(pipe, engine=args.engine, max_characters=args.max_characters, t2s=t2s)
    except (OSError, ValueError) as error:
        raise UserError(f"--t2s: cannot use {path}: {str(error).splitlines()[0]}") from None


def run_tts(args) -> None:
    usable_audio(args.voice_prompt, "--voice-prompt")
    writable_output(args.output)
    settings = generation_settings(args, [args.voice_prompt] if args.voice_prompt else [])
    speaker = text_speaker(args, settings)
    started = time.perf_counter()
    write(speaker.tts(args.text, args.voice_prompt, **settings), args.output, started)


def run_dialogue(args) -> None:
    from .text import parse_dialogue

    existing_file(args.transcript, "TRANSCRIPT")
    prompts = {}
    for item in args.speaker:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise UserError(f"--speaker wants NAME=FILE (e.g. A=alice.wav), got {item!r}")
        usable_audio(path, f"--speaker {name}")
        prompts[name] = path
    transcript = Path(args.transcript).read_text()
    parse_dialogue(transcript, speakers=list(prompts))  # a bad transcript is refused before the model loads
    writable_output(args.output)
    settings = generation_settings(args, list(prompts.values()))
    speaker = text_speaker(args, settings)
    started = time.perf_counter()
    output = speaker.dialogue(transcript, prompts, pause_seconds=args.pause, **settings)
    for turn in output["timeline"]:
        print(f"[{turn['speaker']}] {turn['start']:7.2f} - {turn['end']:7.2f} s  {turn['text']}")
    write(output, args.output, started)


def run_demo(args) -> None:
    try:
        from .app import Limits, launch_demo
    except ImportError as error:
        raise UserError(f"the demo needs gradio ({error}): pip install 'soundstorm-hf[space]'") from None
    pipe = load_pipeline(args.model, args.device)
    limits = Limits(max_seconds=args.max_seconds, max_file_mb=args.max_file_mb)
    launch_demo(pipe, limits, model_t2s(args.model, pipe), server_name=args.host, server_port=args.port)


def model_t2s(name: str | None, pipe):
    """The T2S model in the model folder's `t2s/`, on the pipeline's device, or None (the offline front end)."""
    from .text import TextToSemantic
    from .text.frontend import t2s_beside

    folder = t2s_beside(resolve_model(name))
    return TextToSemantic.from_pretrained(folder).to(pipe.model.device) if folder is not None else None


def run_training_script(args, script: str, extra: list[str]) -> None:
    """Runs `training/<script>`'s `main` with the remaining arguments (its own `--help` lists them)."""
    path = TRAINING_SCRIPTS / script
    if not path.is_file():
        raise UserError(f"{path} not found: `{args.command}` runs the training scripts of a source checkout")
    spec = importlib.util.spec_from_file_location(f"soundstorm_training_{path.stem}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    if script == "finetune_voice.py":
        module.cli(extra, prog=f"soundstorm-hf {args.command}")
    else:  # the scripts' own command lines: usage errors exit 2, a stopped run with its status, no traceback
        module.cli(extra)


def run_push(args) -> None:
    from huggingface_hub import HfApi

    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise UserError(f"FOLDER: {folder} is not a saved model folder (no config.json)")
    api = HfApi(token=args.token)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=args.repo_id, repo_type="model", commit_message=args.message
    )
    print(f"pushed {folder} to {getattr(info, 'commit_url', args.repo_id)}")


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
        help=f"Model folder or Hub id, with its tokenizers recorded. Default: ${MODEL_ENV}, else '{DEFAULT_MODEL}'.",
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
    tts.add_argument("output", help="Audio file to write at the codec's rate.")
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

    for name, script, help in (
        ("prepare", "prepare_dataset.py", "Tokenize an audio dataset (training/prepare_dataset.py; --help lists its flags)."),
        ("train", "train.py", "Train with Accelerate (training/train.py; --help lists its flags)."),
        ("finetune", "finetune_voice.py", "Fine-tune on one speaker's recordings (training/finetune_voice.py; --help lists its flags)."),
    ):
        sub = commands.add_parser(name, help=help, description=help, add_help=False)
        sub.set_defaults(run=lambda args, extra, script=script: run_training_script(args, script, extra))

    push = command("push", "Upload a saved model folder to the Hugging Face Hub.")
    push.add_argument("folder", help="Folder written by save_pretrained (model, tokenizers, generation config).")
    push.add_argument("repo_id", help="Hub repository, e.g. user/soundstorm-small (created if missing).")
    push.add_argument("--private", action="store_true", help="Create the repository as private.")
    push.add_argument("--message", default="Upload SoundStorm model", help="Commit message.")
    push.add_argument("--token", default=None, help="Hub token. Default: $HF_TOKEN or the logged-in one.")
    push.set_defaults(run=run_push)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command not in ("prepare", "train", "finetune") and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in ("prepare", "train", "finetune"):
            args.run(args, extra)  # a failure deep in training keeps its traceback
        else:
            try:
                args.run(args)
            except ValueError as error:  # the pipeline's own checks of the inputs (silent audio, short prompt, ...)
                raise UserError(str(error)) from None
    except UserError as error:
        print(f"soundstorm-hf {args.command}: error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
