"""The contenders: SoundStorm (this package) and an autoregressive Llama baseline of the same size."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from soundstorm_hf import SoundStormConfig, SoundStormForConditionalGeneration


def soundstorm_config(preset: str, max_seconds: float, windowed: bool = False) -> SoundStormConfig:
    """The preset; unless `windowed`, `max_frames` is raised to the longest benchmarked duration (the presets stop
    at 30 s) so that every duration runs as one window."""
    config = SoundStormConfig.from_preset(preset, hidden_dropout=0.0)
    if not windowed:
        config.max_frames = max(config.max_frames, int(round(max_seconds * config.acoustic_frame_rate)))
    return config


def build_soundstorm(config: SoundStormConfig, device: str, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    model = SoundStormForConditionalGeneration(config).to(device=device, dtype=dtype).eval()
    return model


class ForwardCounter:
    """Counts calls of a module's forward (one per decoding pass)."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1

    def reset(self) -> int:
        count, self.count = self.count, 0
        return count


class AutoregressiveBaseline:
    """A `LlamaForCausalLM` with SoundStorm's width, depth, heads and FFN size that writes the same Q x T codes.

    Token layout: `[BOS] semantic ids (offset) ... then the acoustic codes flattened frame by frame`
    (frame 0 levels 1..Q, frame 1 levels 1..Q, ...), each level with its own id range, as in AudioLM's
    acoustic stages. Decoding uses transformers' own `generate` with the KV cache and
    `min_new_tokens = max_new_tokens = Q * T`.
    """

    def __init__(self, config: SoundStormConfig, max_seconds: float, device: str, dtype: torch.dtype,
                 compile: bool = False, seed: int = 0):
        self.sc = config
        levels, codebook = config.num_levels, config.codebook_size
        self.semantic_offset = levels * codebook
        self.bos_id = self.semantic_offset + config.semantic_vocab_size
        max_frames = int(round(max_seconds * config.acoustic_frame_rate))
        max_positions = 1 + config.num_semantic_frames(max_frames) + levels * max_frames + 8
        self.config = LlamaConfig(
            vocab_size=self.bos_id + 1,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_attention_heads,
            max_position_embeddings=max_positions,
            rope_theta=config.rope_theta,
            bos_token_id=self.bos_id,
            eos_token_id=self.bos_id,
            pad_token_id=self.bos_id,
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        self.model = LlamaForCausalLM(self.config).to(device=device, dtype=dtype).eval()
        self.device = device
        self.compile = compile
        if compile:
            self.model.forward = torch.compile(self.model.forward, dynamic=False)
        self.counter = ForwardCounter(self.model)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def generate(self, semantic_ids: torch.Tensor, num_frames: int, seed: int = 0) -> torch.Tensor:
        batch = semantic_ids.shape[0]
        bos = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=semantic_ids.device)
        input_ids = torch.cat([bos, semantic_ids + self.semantic_offset], dim=1)
        new_tokens = self.sc.num_levels * num_frames
        torch.manual_seed(seed)
        extra = {"cache_implementation": "static"} if self.compile else {}
        out = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            use_cache=True,
            **extra,
        )
        flat = out[:, input_ids.shape[1]:]  # (batch, T * Q), frame-major
        # Back to SoundStorm's layout (batch, levels, frames); random weights may write ids of the wrong
        # level, which only matters for the shape, not the speed.
        return flat.view(batch, num_frames, self.sc.num_levels).transpose(1, 2)
