"""What sampling level 1 costs in a whole `generate` call: greedy vs Gumbel-max (the decoder's draw) vs
`torch.multinomial` (the draw it replaced), alternating in one process.

    python benchmarks/bench_sampling.py --threads 2      # the issue's configuration: width 256, 4 layers, 8 x 1024, 10 s
"""

import argparse

import torch

import soundstorm_hf.decoding_soundstorm as decoding
from common import RESULTS_DIR, machine_info, median, set_threads, timed, write_json
from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration


def multinomial_tokens(scores: torch.Tensor, generator) -> torch.Tensor:
    """The previous draw: a softmax, then `torch.multinomial` per row."""
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS_DIR / "sampling_cost.json"))
    args = parser.parse_args()
    set_threads(args.threads)

    config = SoundStormConfig.from_preset(
        "small", hidden_size=256, num_hidden_layers=4, num_levels=8, codebook_size=1024, hidden_dropout=0.0
    )
    torch.manual_seed(0)
    model = SoundStormForConditionalGeneration(config).eval()
    frames = int(args.seconds * config.acoustic_frame_rate)
    semantic = torch.randint(0, config.semantic_vocab_size, (1, config.num_semantic_frames(frames)))
    gumbel = decoding.sample_tokens
    variants = {
        "greedy": (gumbel, dict(do_sample=False)),
        "gumbel_max": (gumbel, {}),
        "multinomial": (multinomial_tokens, {}),
    }
    times = {name: [] for name in variants}
    for name, (draw, settings) in variants.items():  # warm-up
        decoding.sample_tokens = draw
        model.generate(semantic, seed=0, **settings)
    for _ in range(args.repeats):
        for name, (draw, settings) in variants.items():
            decoding.sample_tokens = draw
            seconds, _ = timed(lambda: model.generate(semantic, seed=0, **settings), "cpu")
            times[name].append(seconds)
    decoding.sample_tokens = gumbel
    result = {
        "machine": machine_info(),
        "config": dict(hidden_size=256, num_hidden_layers=4, num_levels=8, codebook_size=1024, frames=frames),
        "median_seconds": {name: median(values) for name, values in times.items()},
        "sampling_cost_share": {
            name: 1 - median(times["greedy"]) / median(times[name]) for name in ("gumbel_max", "multinomial")
        },
        "times": times,
    }
    print(write_json(args.output, result))
    print(result["median_seconds"], result["sampling_cost_share"])


if __name__ == "__main__":
    main()
