"""Fit the offline tokenizer pair on a small espeak-ng corpus, save it, and measure the codec's reconstruction.

    python scripts/build_offline_tokenizers.py --output-dir offline_tokenizers

writes `offline_tokenizers/codec` (OfflineMelCodec) and `offline_tokenizers/semantic` (OfflineMfccTokenizer) and
prints the measurements quoted in their docstrings. Takes one to two minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from soundstorm_hf.audio import prepare_waveform, synthesize_speech
from soundstorm_hf.tokenizers import OfflineMelCodec, OfflineMfccTokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A gentle breeze carried the smell of rain across the valley.",
    "Please put the blue folder on the second shelf by the window.",
    "Seven thirsty horses drank from the cold mountain stream.",
    "She bought three oranges, a loaf of bread and some cheese.",
    "The museum opens at nine and closes early on Sundays.",
    "Thick fog rolled in from the harbour before dawn.",
    "He whistled a cheerful tune while fixing the old bicycle.",
    "Our train was delayed by almost an hour this morning.",
    "Children laughed and chased each other around the fountain.",
    "The judge asked the witness to speak more clearly.",
    "Fresh paint makes the kitchen look bright and new.",
    "Would you like tea or coffee with your breakfast?",
    "The village choir practised every Thursday evening.",
    "Lightning flashed, and thunder shook the windows.",
    "My neighbour grows tomatoes, beans and pumpkins.",
    "The pilot announced that we would land in twenty minutes.",
    "Quiet voices drifted up from the garden below.",
    "A small boat drifted slowly toward the sandy shore.",
    "They measured the length of the bridge twice.",
]
HELD_OUT_SENTENCES = [
    "The yellow kite climbed high above the crowded beach.",
    "Nobody remembered where the spare key had been hidden.",
    "Warm soup is the best cure for a winter cold.",
    "The engineer checked every valve before starting the pump.",
]
TRAIN_VOICES = ["en+m3", "en+f3", "en-us+m1", "en+f2"]
HELD_OUT_VOICE = "en+m5"


def render(sentences: list[str], voices: list[str], sampling_rate: int) -> list[torch.Tensor]:
    waveforms = []
    for voice in voices:
        for sentence in sentences:
            waveform, rate = synthesize_speech(sentence, voice)
            waveforms.append(prepare_waveform(waveform, rate, sampling_rate))
    return waveforms


def log_mel_distances(codec: OfflineMelCodec, waveforms: list[torch.Tensor], levels: list[int]) -> list[tuple]:
    """Mean absolute log-mel distance per number of levels: of the quantized frames, and of the decoded audio."""
    rows = []
    for num_levels in levels:
        quantized_error, decoded_error, frames = 0.0, 0.0, 0
        for waveform in waveforms:
            reference = codec.frontend(waveform[None])  # (1, frames, mels)
            codes = codec.encode(waveform)[:, :num_levels]  # (1, levels, frames)
            quantized = codec.quantizer.decode(codes.transpose(1, 2))
            decoded = codec.frontend(codec.decode(codes)[:, : waveform.shape[-1]])
            quantized_error += (quantized - reference).abs().mean(-1).sum().item()
            decoded_error += (decoded - reference).abs().mean(-1).sum().item()
            frames += reference.shape[1]
        rows.append((num_levels, quantized_error / frames, decoded_error / frames))
    return rows


def edit_distance(a: list[int], b: list[int]) -> float:
    """Levenshtein distance between token sequences, normalized by the longer one."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1] / max(len(a), len(b))


def token_distances(semantic: OfflineMfccTokenizer, voices: list[str]) -> tuple[float, float]:
    """Mean normalized edit distance between the tokens of held-out sentences: (same sentence in different voices,
    different sentences in the same voice). The smaller the first against the second, the less speaker in tokens."""
    tokens = {
        (sentence, voice): semantic.encode(waveform)[0].tolist()
        for voice in voices
        for sentence, waveform in zip(HELD_OUT_SENTENCES, render(HELD_OUT_SENTENCES, [voice], semantic.sampling_rate))
    }
    same_sentence, same_voice = [], []
    for (sentence_a, voice_a), a in tokens.items():
        for (sentence_b, voice_b), b in tokens.items():
            if (sentence_a, voice_a) < (sentence_b, voice_b):
                if sentence_a == sentence_b:
                    same_sentence.append(edit_distance(a, b))
                elif voice_a == voice_b:
                    same_voice.append(edit_distance(a, b))
    return sum(same_sentence) / len(same_sentence), sum(same_voice) / len(same_voice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("offline_tokenizers"))
    parser.add_argument("--num-levels", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--num-clusters", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    codec, semantic = OfflineMelCodec(), OfflineMfccTokenizer()
    corpus = render(SENTENCES, TRAIN_VOICES, codec.sampling_rate)
    seconds = sum(len(waveform) for waveform in corpus) / codec.sampling_rate
    print(f"corpus: {len(corpus)} utterances, {seconds:.0f} s")

    codec.fit(corpus, num_levels=args.num_levels, codebook_size=args.codebook_size, seed=args.seed)
    semantic.fit(corpus, num_clusters=args.num_clusters, seed=args.seed)
    codec.save_pretrained(args.output_dir / "codec")
    semantic.save_pretrained(args.output_dir / "semantic")
    print(f"saved to {args.output_dir}/codec and {args.output_dir}/semantic")

    held_out = render(HELD_OUT_SENTENCES, [HELD_OUT_VOICE], codec.sampling_rate)
    levels = sorted({1, 2, 4, args.num_levels} & set(range(1, args.num_levels + 1)))
    print(f"mean |log-mel difference|, held-out voice {HELD_OUT_VOICE}:")
    print("levels  quantized  decoded-audio")
    for num_levels, quantized_error, decoded_error in log_mel_distances(codec, held_out, levels):
        print(f"{num_levels:>6}  {quantized_error:9.3f}  {decoded_error:13.3f}")
    same_sentence, same_voice = token_distances(semantic, [HELD_OUT_VOICE, "en+f4"])
    print(
        f"semantic tokens, normalized edit distance on held-out sentences: same sentence, voices {HELD_OUT_VOICE} vs "
        f"en+f4: {same_sentence:.2f}; different sentences, same voice: {same_voice:.2f}"
    )


if __name__ == "__main__":
    main()
