"""`soundstorm-hf`: resynthesize or voice-convert audio files from the command line."""

import argparse

import soundfile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="soundstorm-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="Say what INPUT says, in the voice of --voice-prompt (or unprompted), and write OUTPUT."
    )
    convert.add_argument("--model", required=True, help="Model folder or Hub id (with its tokenizers recorded).")
    convert.add_argument("input", help="Audio file whose content is kept.")
    convert.add_argument("output", help="Audio file to write (format from the extension).")
    convert.add_argument("--voice-prompt", help="Audio file (a few seconds) of the target voice.")
    convert.add_argument("--device", default=None, help="e.g. cuda, cpu (default: cpu).")
    convert.add_argument("--seed", type=int, default=None)
    convert.add_argument("--steps", type=int, nargs="+", help="Iterations per RVQ level, e.g. 16 1 1 ...")
    convert.add_argument("--temperature", type=float, default=None)
    convert.add_argument("--guidance-scale", type=float, default=None)
    args = parser.parse_args(argv)

    from .pipeline import SoundStormPipeline  # heavy imports only once the arguments are valid

    pipe = SoundStormPipeline.from_pretrained(args.model, device=args.device)
    settings = {
        "seed": args.seed,
        "steps_per_level": args.steps,
        "temperature": args.temperature,
        "guidance_scale": args.guidance_scale,
    }
    output = pipe(args.input, voice_prompt=args.voice_prompt, **{k: v for k, v in settings.items() if v is not None})
    soundfile.write(args.output, output["audio"], output["sampling_rate"])
    print(f"wrote {args.output}: {len(output['audio']) / output['sampling_rate']:.2f} s at {output['sampling_rate']} Hz")


if __name__ == "__main__":
    main()
