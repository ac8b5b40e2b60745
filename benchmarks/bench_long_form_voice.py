"""Does a long conversion keep the voice? Speaker similarity (Resemblyzer) of each 10 s of output to the voice prompt.

A 3-minute content (the bundled real speech, repeated) is converted by the bundled default model into the voice of a
real prompt, with the voice prompt kept as a prefix of every window (`keep_prompt=True`, the default) and without it
(each window prompted by the previous one only). The last minute's mean similarity should be within 0.02 of the
first minute's. `--minutes` and `--iterations` (level-1 iterations) trade precision for time.

    python benchmarks/bench_long_form_voice.py            # writes benchmarks/results/long_form_voice.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, machine_info, write_json  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "soundstorm_hf" / "examples"
CONTENT, PROMPT = EXAMPLES / "real_content_librivox.wav", EXAMPLES / "real_voice_asterisk_it.wav"
SEGMENT_SECONDS = 10.0


def similarity_per_segment(pipe, content: np.ndarray, rate: int, iterations: int, keep_prompt: bool) -> list[float]:
    from soundstorm_hf.evaluation import speaker_similarity

    steps = [iterations] + [1] * (pipe.model.config.num_levels - 1)
    output = pipe({"array": content, "sampling_rate": rate}, voice_prompt=str(PROMPT), seed=0,
                  steps_per_level=steps, keep_prompt=keep_prompt)
    audio, out_rate = output["audio"], output["sampling_rate"]
    prompt = prompt_audio(out_rate)
    segment = round(SEGMENT_SECONDS * out_rate)
    return [speaker_similarity(audio[start : start + segment], prompt, out_rate)
            for start in range(0, len(audio) - segment + 1, segment)]


def prompt_audio(rate: int) -> np.ndarray:
    import soundfile
    import soxr

    prompt, prompt_rate = soundfile.read(PROMPT, dtype="float32")
    return soxr.resample(prompt, prompt_rate, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--iterations", type=int, default=8, help="level-1 iterations (the default model's 8)")
    parser.add_argument("--output", default=str(RESULTS_DIR / "long_form_voice.json"))
    args = parser.parse_args()

    import soundfile

    from soundstorm_hf.pipeline import SoundStormPipeline

    pipe = SoundStormPipeline.from_pretrained("default")
    speech, rate = soundfile.read(CONTENT, dtype="float32")
    content = np.tile(speech, int(np.ceil(args.minutes * 60 * rate / len(speech))))[: round(args.minutes * 60 * rate)]
    per_minute = round(60 / SEGMENT_SECONDS)
    results = {"machine": machine_info(), "load_average": os.getloadavg(), "minutes": args.minutes,
               "level_1_iterations": args.iterations, "content": CONTENT.name, "voice_prompt": PROMPT.name}
    for keep_prompt in (True, False):
        started = time.perf_counter()
        similarities = similarity_per_segment(pipe, content, rate, args.iterations, keep_prompt)
        first, last = float(np.mean(similarities[:per_minute])), float(np.mean(similarities[-per_minute:]))
        results["keep_prompt" if keep_prompt else "previous_window_only"] = {
            "similarity_per_10s": [round(s, 4) for s in similarities],
            "first_minute": round(first, 4),
            "last_minute": round(last, 4),
            "last_minus_first": round(last - first, 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"keep_prompt={keep_prompt}: first minute {first:.4f}, last minute {last:.4f}, "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    write_json(Path(args.output), results)


if __name__ == "__main__":
    main()
