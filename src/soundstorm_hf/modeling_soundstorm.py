"""SoundStorm: a bidirectional Conformer over summed RVQ-token embeddings (Borsos et al., 2023)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import ModelOutput

from .configuration_soundstorm import SoundStormConfig
from .generation_soundstorm import MaskGitDecodingMixin, SoundStormGenerationConfig

IGNORE_INDEX = -100


@dataclass
class SoundStormOutput(ModelOutput):
    """
    Output of [`SoundStormForConditionalGeneration`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): cross-entropy averaged over every labelled token.
        logits (`torch.FloatTensor`): `(batch, frames, codebook_size)` for the requested `level`, or
            `(batch, levels, frames, codebook_size)` when neither `labels` nor `level` is given.
        level_loss (`torch.FloatTensor` of shape `(levels,)`): mean loss per RVQ level (NaN where no label).
        level_accuracy (`torch.FloatTensor` of shape `(levels,)`): argmax accuracy per level (NaN where no label).
        level_num_targets (`torch.LongTensor` of shape `(levels,)`): labelled tokens per level, to weight
            the per-level figures when aggregating over batches.
        last_hidden_state (`torch.FloatTensor` of shape `(batch, frames, hidden_size)`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    level_loss: torch.FloatTensor | None = None
    level_accuracy: torch.FloatTensor | None = None
    level_num_targets: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def rotary_cos_sin(num_frames: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables (frames, head_dim), computed per call: they cost nothing next to attention.

    The first half of `sin` is negated, which folds the sign of rotate-half into the table (see `apply_rotary`).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(num_frames, device=device, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos(), angles.sin()  # (frames, head_dim / 2)
    return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x * cos + rotate_half(x) * sin` with rotate_half(first, second) = (-second, first): the roll swaps the
    halves and the table's signed `sin` negates one; four kernels, the same values bit for bit."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


class SoundStormFeedForward(nn.Module):
    """Pre-norm Swish feed-forward module; the block scales its output by 1/2 (Macaron style)."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(F.silu(self.up(self.layer_norm(hidden_states))))
        return self.dropout(self.down(hidden_states))


class SoundStormSelfAttention(nn.Module):
    """Bidirectional multi-head attention with rotary positions, computed by `scaled_dot_product_attention`."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states, rotary, attention_bias) -> torch.Tensor:
        batch, frames, _ = hidden_states.shape
        qkv = self.qkv(self.layer_norm(hidden_states)).view(batch, frames, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, batch, heads, frames, head_dim)
        query, key = apply_rotary(qkv[:2], *rotary)  # query and key rotated together: one set of kernels
        value = qkv[2]
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_bias, dropout_p=self.attention_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, frames, -1)
        return self.dropout(self.out(attended))


class SoundStormConvModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv over frames, norm, Swish, pointwise.

    Padded (and hidden-prompt) frames are zeroed before the depthwise convolution so that they cannot
    leak into the frames beside them. LayerNorm replaces the original BatchNorm, whose batch statistics
    would depend on padding.
    """

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pointwise_in = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.depthwise = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=config.conv_kernel_size,
            padding=config.conv_kernel_size // 2,
            groups=config.hidden_size,
        )
        self.depthwise_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pointwise_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        hidden_states = F.glu(self.pointwise_in(self.layer_norm(hidden_states)), dim=-1)
        if frame_mask is not None:
            hidden_states = hidden_states * frame_mask
        hidden_states = self.depthwise(hidden_states.transpose(1, 2)).transpose(1, 2)
        hidden_states = F.silu(self.depthwise_norm(hidden_states))
        return self.dropout(self.pointwise_out(hidden_states))


class SoundStormConformerBlock(GradientCheckpointingLayer):
    """Half feed-forward, self-attention, convolution, half feed-forward, final norm (Gulati et al., 2020)."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.feed_forward_in = SoundStormFeedForward(config)
        self.attention = SoundStormSelfAttention(config)
        self.convolution = SoundStormConvModule(config)
        self.feed_forward_out = SoundStormFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, rotary, attention_bias, frame_mask) -> torch.Tensor:
        # `add(..., alpha=0.5)` is exactly `h + 0.5 * f` (a power-of-two scale) without the extra temporary.
        hidden_states = torch.add(hidden_states, self.feed_forward_in(hidden_states), alpha=0.5)
        hidden_states = hidden_states + self.attention(hidden_states, rotary, attention_bias)
        hidden_states = hidden_states + self.convolution(hidden_states, frame_mask)
        hidden_states = torch.add(hidden_states, self.feed_forward_out(hidden_states), alpha=0.5)
        return self.final_layer_norm(hidden_states)


class SoundStormEmbeddings(nn.Module):
    """Per frame: the sum of one embedding per RVQ level (each table has a MASK row) plus the aligned semantic one."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.config = config
        self.acoustic = nn.Embedding(config.num_levels * (config.codebook_size + 1), config.hidden_size)
        self.semantic = nn.Embedding(config.semantic_vocab_size + 1, config.hidden_size)

    def embed_semantic(self, semantic_ids: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(batch, semantic frames) -> (batch, frames, hidden): duplicated, or summed, to the acoustic rate."""
        ratio = self.config.semantic_upsampling
        embeds = self.semantic(semantic_ids)
        if ratio.denominator == 1:
            return embeds.repeat_interleave(ratio.numerator, dim=1)[:, :num_frames]
        return embeds.view(embeds.shape[0], num_frames, ratio.denominator, -1).sum(dim=2)

    def forward(self, acoustic_ids: torch.Tensor, semantic_embeds: torch.Tensor) -> torch.Tensor:
        # acoustic_ids: (batch, levels, frames); each level indexes its own slice of the table.
        levels = torch.arange(self.config.num_levels, device=acoustic_ids.device)
        offsets = (levels * (self.config.codebook_size + 1)).view(1, -1, 1)
        return self.acoustic(acoustic_ids + offsets).sum(dim=1) + semantic_embeds  # (batch, frames, hidden)


class SoundStormPreTrainedModel(PreTrainedModel):
    config_class = SoundStormConfig
    base_model_prefix = "model"
    main_input_name = "semantic_ids"
    _no_split_modules = ["SoundStormConformerBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True


class SoundStormModel(SoundStormPreTrainedModel):
    """The Conformer stack without output heads: token ids in, per-frame hidden states out."""

    def __init__(self, config: SoundStormConfig):
        super().__init__(config)
        self.embeddings = SoundStormEmbeddings(config)
        self.layers = nn.ModuleList(SoundStormConformerBlock(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def check_inputs(
        self,
        semantic_ids: torch.Tensor,
        acoustic_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        """Raises a `ValueError` that names the problem for malformed ids or shapes."""
        config = self.config
        if acoustic_ids.ndim != 3 or acoustic_ids.shape[1] != config.num_levels:
            raise ValueError(
                f"`acoustic_ids` must have shape (batch, {config.num_levels} levels, frames), "
                f"got {tuple(acoustic_ids.shape)}."
            )
        batch, _, num_frames = acoustic_ids.shape
        if num_frames == 0:
            raise ValueError("`acoustic_ids` is an empty sequence (0 frames).")
        if num_frames > config.max_frames:
            raise ValueError(
                f"{num_frames} frames exceed the model's `max_frames` ({config.max_frames}); generate long audio "
                "in windows instead."
            )
        check_ids("acoustic_ids", acoustic_ids, config.mask_token_id + 1, "codebook_size + 1 (MASK)")
        if semantic_ids.ndim != 2:
            raise ValueError(f"`semantic_ids` must have shape (batch, frames), got {tuple(semantic_ids.shape)}.")
        if semantic_ids.shape[0] != batch:
            raise ValueError(
                f"Batch sizes differ: `semantic_ids` has {semantic_ids.shape[0]} rows, `acoustic_ids` {batch}."
            )
        expected = config.num_semantic_frames(num_frames)
        if semantic_ids.shape[1] != expected:
            raise ValueError(
                f"{num_frames} acoustic frames at {config.acoustic_frame_rate} Hz need {expected} semantic tokens at "
                f"{config.semantic_frame_rate} Hz, got {semantic_ids.shape[1]}."
            )
        check_ids("semantic_ids", semantic_ids, config.semantic_null_id + 1, "semantic_vocab_size + 1 (null id)")
        if attention_mask is not None and attention_mask.shape != (batch, num_frames):
            raise ValueError(
                f"`attention_mask` must have shape (batch, frames) = {(batch, num_frames)}, "
                f"got {tuple(attention_mask.shape)}."
            )

    def forward(
        self,
        semantic_ids: torch.LongTensor | None = None,
        acoustic_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        semantic_embeds: torch.FloatTensor | None = None,
        return_dict: bool = True,
    ) -> BaseModelOutput:
        r"""
        semantic_ids (`torch.LongTensor` of shape `(batch, semantic_frames)`): conditioning tokens.
        acoustic_ids (`torch.LongTensor` of shape `(batch, levels, frames)`): codec tokens, MASK where unknown.
        attention_mask (`torch.Tensor` of shape `(batch, frames)`): 1 for frames the model sees, 0 for padding.
        semantic_embeds (`torch.FloatTensor` of shape `(batch, frames, hidden)`): the semantic embedding already
            aligned to frames; the decoder computes it once and passes it on every pass instead of `semantic_ids`.
        """
        if acoustic_ids is None:
            raise ValueError("`acoustic_ids` is required.")
        if semantic_embeds is None:
            if semantic_ids is None:
                raise ValueError("Pass `semantic_ids` (or precomputed `semantic_embeds`).")
            self.check_inputs(semantic_ids, acoustic_ids, attention_mask)
            semantic_embeds = self.embeddings.embed_semantic(semantic_ids, acoustic_ids.shape[-1])
        hidden_states = self.embeddings(acoustic_ids, semantic_embeds)

        num_frames = hidden_states.shape[1]
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        rotary = rotary_cos_sin(num_frames, head_dim, self.config.rope_theta, hidden_states.device, hidden_states.dtype)
        attention_bias = frame_mask = None
        # An all-ones mask is dropped so that SDPA can use its fastest kernel; under torch.compile the check would
        # break the graph (and a CUDA graph with it), so a given mask is always applied there.
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            visible = attention_mask.bool()
            attention_bias = visible[:, None, None, :]  # (batch, 1, 1, frames): keys each query may attend to
            frame_mask = visible[:, :, None].to(hidden_states.dtype)  # (batch, frames, 1)
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary, attention_bias, frame_mask)
        if not return_dict:
            return (hidden_states,)
        return BaseModelOutput(last_hidden_state=hidden_states)


def check_ids(name: str, ids: torch.Tensor, upper: int, upper_name: str) -> None:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"`{name}` must hold integer token ids, got dtype {ids.dtype}.")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= upper):
        raise ValueError(
            f"`{name}` holds ids outside [0, {upper}) = [0, {upper_name}): min {int(ids.min())}, max {int(ids.max())}."
        )


class SoundStormForConditionalGeneration(MaskGitDecodingMixin, SoundStormPreTrainedModel):
    """SoundStorm with one output head per RVQ level: the masked-token loss in `forward`, MaskGIT decoding in `generate`."""

    def __init__(self, config: SoundStormConfig):
        super().__init__(config)
        self.model = SoundStormModel(config)
        self.heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.codebook_size) for _ in range(config.num_levels)
        )
        self.generation_config = SoundStormGenerationConfig.for_model_config(config)
        self.post_init()

    def forward(
        self,
        semantic_ids: torch.LongTensor | None = None,
        acoustic_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        level: int | None = None,
        semantic_embeds: torch.FloatTensor | None = None,
        return_dict: bool = True,
    ) -> SoundStormOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch, levels, frames)`): target codes, -100 where no loss is taken.
            Logits are computed only at labelled tokens, each with its own level's head.
        level (`int`): without `labels`, return the logits of this level's head only, `(batch, frames, vocab)`.
            With neither, all heads are applied, `(batch, levels, frames, vocab)`.
        """
        hidden_states = self.model(
            semantic_ids=semantic_ids,
            acoustic_ids=acoustic_ids,
            attention_mask=attention_mask,
            semantic_embeds=semantic_embeds,
        ).last_hidden_state
        if labels is not None:
            output = self._masked_token_loss(hidden_states, labels)
        elif level is not None:
            output = SoundStormOutput(logits=self.level_logits(hidden_states, level))
        else:
            output = SoundStormOutput(logits=torch.stack([head(hidden_states) for head in self.heads], dim=1))
        output.last_hidden_state = hidden_states
        return output if return_dict else output.to_tuple()

    def level_logits(self, hidden_states: torch.Tensor, level: int) -> torch.Tensor:
        """(batch, frames, hidden) -> (batch, frames, codebook_size) through the head of `level` (0-based)."""
        if not 0 <= level < self.config.num_levels:
            raise ValueError(f"`level` must be in [0, {self.config.num_levels}), got {level}.")
        return self.heads[level](hidden_states)

    def _masked_token_loss(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> SoundStormOutput:
        config = self.config
        if labels.shape[:2] != (hidden_states.shape[0], config.num_levels) or labels.shape[2] != hidden_states.shape[1]:
            raise ValueError(
                f"`labels` must have the shape of `acoustic_ids` (batch, levels, frames), got {tuple(labels.shape)}."
            )
        labelled = labels != IGNORE_INDEX  # (batch, levels, frames)
        check_ids("labels", labels[labelled], config.codebook_size, "codebook_size")
        if not bool(labelled.any()):
            raise ValueError("`labels` has no labelled token (all -100): there is nothing to learn from.")

        nan = torch.tensor(float("nan"), device=hidden_states.device)
        total_loss = hidden_states.new_zeros(())
        level_loss, level_accuracy = [], []
        level_num_targets = labelled.sum(dim=(0, 2))  # (levels,)
        for level, head in enumerate(self.heads):
            positions = labelled[:, level]  # (batch, frames)
            if not bool(level_num_targets[level]):
                level_loss.append(nan)
                level_accuracy.append(nan)
                continue
            logits = head(hidden_states[positions]).float()  # (targets, vocab)
            targets = labels[:, level][positions]
            loss_sum = F.cross_entropy(logits, targets, reduction="sum")
            total_loss = total_loss + loss_sum
            level_loss.append(loss_sum.detach() / level_num_targets[level])
            level_accuracy.append((logits.argmax(dim=-1) == targets).float().mean())
        return SoundStormOutput(
            loss=total_loss / level_num_targets.sum(),
            level_loss=torch.stack(level_loss),
            level_accuracy=torch.stack(level_accuracy),
            level_num_targets=level_num_targets,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes `generation_config.json` (transformers only does so for `GenerationMixin` models)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.generation_config.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads weights and config, then the folder's `generation_config.json` when it has one."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        try:
            model.generation_config = SoundStormGenerationConfig.from_pretrained(
                pretrained_model_name_or_path, **hub_kwargs
            )
        except OSError:
            pass  # a checkpoint saved without one keeps the defaults for its config
        return model


__all__ = [
    "SoundStormForConditionalGeneration",
    "SoundStormModel",
    "SoundStormOutput",
    "SoundStormPreTrainedModel",
]
