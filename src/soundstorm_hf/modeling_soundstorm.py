"""SoundStorm: a bidirectional Conformer over summed RVQ-token embeddings (Borsos et al., 2023)."""

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import CONFIG_NAME, TransformersKwargs, can_return_tuple, is_torchdynamo_compiling
from transformers.utils.output_capturing import capture_outputs

from .configuration_soundstorm import SoundStormConfig
from .decoding_soundstorm import ID_DTYPES
from .generation_configuration_soundstorm import SoundStormGenerationConfig
from .generation_soundstorm import SoundStormGenerationMixin
from .masking import IGNORE_INDEX


def reads_values(ids: torch.Tensor, training: bool) -> bool:
    """Whether checks may read `ids` on the host: not while tracing (`torch.compile`, `torch.export`), and not for
    ids on an accelerator during training, where each read would stall the device once per step (training data is
    checked when it is tokenized, `data.check_token_columns`)."""
    return not is_torchdynamo_compiling() and not (training and ids.device.type != "cpu")


def check_token_ids(
    name: str, ids: torch.Tensor, upper: int | None = None, upper_name: str = "", read_values: bool = True
) -> None:
    """Raises a `ValueError` naming `name` for a non-integer dtype or, when `read_values`, ids outside `[0, upper)`."""
    if ids.dtype not in ID_DTYPES:
        raise ValueError(f"`{name}` must hold integer token ids (int64, int32 or int16), got dtype {ids.dtype}.")
    if upper is None or not ids.numel() or not read_values or is_torchdynamo_compiling():
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= upper:
        raise ValueError(f"`{name}` holds ids outside [0, {upper}) = [0, {upper_name}): min {low}, max {high}.")


class SoundStormRotaryEmbedding(nn.Module):
    """Rotary position tables for frames `0..frames-1`, from a buffer of inverse frequencies."""

    inv_freq: torch.Tensor  # (head_dim / 2,)

    def __init__(self, config: SoundStormConfig, device=None):
        super().__init__()
        self.register_buffer("inv_freq", self.compute_inv_freq(config, device), persistent=False)

    @staticmethod
    def compute_inv_freq(config: SoundStormConfig, device=None) -> torch.Tensor:
        head_dim = config.hidden_size // config.num_attention_heads
        exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
        return 1.0 / config.rope_theta**exponents

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, frames, hidden) -> `cos`, `sin` of shape (frames, head_dim) in the states' dtype.

        The first half of `sin` is negated, which folds the sign of rotate-half into the table (see `apply_rotary`).
        """
        frames = torch.arange(hidden_states.shape[1], device=hidden_states.device, dtype=torch.float32)
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            angles = torch.outer(frames, self.inv_freq.float())  # (frames, head_dim / 2)
            cos, sin = angles.cos(), angles.sin()
        dtype = hidden_states.dtype
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x * cos + rotate_half(x) * sin` with rotate_half(first, second) = (-second, first): the roll swaps the
    halves and the table's signed `sin` negates one; four kernels instead of a split and a concatenation."""
    return states * cos + states.roll(states.shape[-1] // 2, dims=-1) * sin


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, so that its probabilities can be returned. `attention_mask` is additive (0 where a key
    is visible, the dtype's minimum where it is not): a row with every key hidden stays finite (uniform)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, frames, frames)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (batch, frames, heads, head_dim)
    return output, weights


class SoundStormSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with rotary positions, run by the configured attention interface."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, frames, _ = hidden_states.shape
        shape = (batch, frames, -1, self.head_dim)
        query = apply_rotary(self.q_proj(hidden_states).view(shape).transpose(1, 2), *position_embeddings)
        key = apply_rotary(self.k_proj(hidden_states).view(shape).transpose(1, 2), *position_embeddings)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)  # (batch, heads, frames, head_dim)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attended, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.out_proj(attended.reshape(batch, frames, -1)), weights


class SoundStormFeedForward(nn.Module):
    """Swish feed-forward module; the block scales its output by 1/2 (Macaron style)."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(F.silu(self.intermediate_dense(hidden_states)))
        return self.dropout(self.output_dense(hidden_states))


class SoundStormConvolutionModule(nn.Module):
    """Conformer convolution module: pointwise + GLU, depthwise conv over frames, norm, Swish, pointwise.

    The pointwise convolutions are linear layers over channels. Hidden frames (padding, a dropped prompt) are zeroed
    before the depthwise convolution so that they cannot leak into the frames beside them. LayerNorm replaces the
    original BatchNorm, whose batch statistics would depend on padding.
    """

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pointwise_conv1 = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.depthwise_conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=config.conv_kernel_size,
            padding=config.conv_kernel_size // 2,
            groups=config.hidden_size,
        )
        self.depthwise_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pointwise_conv2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = F.glu(self.pointwise_conv1(self.layer_norm(hidden_states)), dim=-1)
        if frame_mask is not None:
            hidden_states = hidden_states * frame_mask
        hidden_states = self.depthwise_conv(hidden_states.transpose(1, 2)).transpose(1, 2)
        hidden_states = F.silu(self.depthwise_layer_norm(hidden_states))
        return self.dropout(self.pointwise_conv2(hidden_states))


class SoundStormConformerBlock(GradientCheckpointingLayer):
    """Half feed-forward, self-attention, convolution, half feed-forward, final norm (Gulati et al., 2020)."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.ffn1_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn1 = SoundStormFeedForward(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SoundStormSelfAttention(config)
        self.self_attn_dropout = nn.Dropout(config.hidden_dropout)
        self.conv_module = SoundStormConvolutionModule(config)
        self.ffn2_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn2 = SoundStormFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        # `add(..., alpha=0.5)` is exactly `h + 0.5 * f` (a power-of-two scale) without the extra temporary.
        hidden_states = torch.add(hidden_states, self.ffn1(self.ffn1_layer_norm(hidden_states)), alpha=0.5)
        attended, _ = self.self_attn(
            self.self_attn_layer_norm(hidden_states), position_embeddings, attention_mask, **kwargs
        )
        hidden_states = hidden_states + self.self_attn_dropout(attended)
        hidden_states = hidden_states + self.conv_module(hidden_states, frame_mask)
        hidden_states = torch.add(hidden_states, self.ffn2(self.ffn2_layer_norm(hidden_states)), alpha=0.5)
        return self.final_layer_norm(hidden_states)


class SoundStormEmbeddings(nn.Module):
    """Per frame: the sum of one embedding per RVQ level (each table has a MASK row) plus the aligned semantic one."""

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        self.config = config
        # One table for all levels: level q's ids live at rows [q * (codebook_size + 1), (q + 1) * (codebook_size + 1)).
        self.acoustic_embeddings = nn.Embedding(config.num_levels * (config.codebook_size + 1), config.hidden_size)
        self.semantic_embeddings = nn.Embedding(config.semantic_vocab_size + 1, config.hidden_size)

    def embed_semantic(self, semantic_ids: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(batch, semantic frames) -> (batch, frames, hidden): duplicated, or summed, to the acoustic rate."""
        frames_per_unit, tokens_per_unit = self.config.alignment_unit
        embeds = self.semantic_embeddings(semantic_ids)
        if tokens_per_unit == 1:
            return embeds.repeat_interleave(frames_per_unit, dim=1)[:, :num_frames]
        return embeds.view(embeds.shape[0], num_frames, tokens_per_unit, -1).sum(dim=2)

    def forward(self, acoustic_ids: torch.Tensor, semantic_embeds: torch.Tensor) -> torch.Tensor:
        # acoustic_ids: (batch, levels, frames); each level indexes its own slice of the table.
        levels = torch.arange(self.config.num_levels, device=acoustic_ids.device)
        offsets = (levels * (self.config.codebook_size + 1)).view(1, -1, 1)
        return self.acoustic_embeddings(acoustic_ids + offsets).sum(dim=1) + semantic_embeds  # (batch, frames, hidden)


class SoundStormPreTrainedModel(PreTrainedModel):
    config_class = SoundStormConfig
    base_model_prefix = "model"
    main_input_name = "semantic_ids"
    input_modalities = "audio"
    _no_split_modules = ["SoundStormConformerBlock"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Offered: eager and sdpa, tested equal. Flash attention takes padding as 2-D masks of right padding, while
    # classifier-free guidance hides a row's start (its prompt); flex attention has no CPU backward to test here.
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": SoundStormConformerBlock, "attentions": SoundStormSelfAttention}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As transformers' `from_pretrained`, but a local folder without `config.json` is an error naming it: left
        to transformers, it would build the default (paper-sized) config and report every weight as mismatched."""
        if pretrained_model_name_or_path is not None and kwargs.get("config") is None:
            folder = Path(pretrained_model_name_or_path) / kwargs.get("subfolder", "")
            if folder.is_dir() and not (folder / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"{CONFIG_NAME} missing in {folder}: it is not a saved SoundStorm model folder.")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As transformers' `save_pretrained`, with every Auto class of this file in `config.json`'s `auto_map`
        (transformers writes the saved class's only), so that `AutoModel` and `AutoModelForMaskedLM` alike load the
        folder through its copy of this code (`trust_remote_code=True`) where the package is not installed."""
        module = self.__module__.rpartition(".")[2]
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            **{cls._auto_class: f"{module}.{cls.__name__}" for cls in (SoundStormModel, SoundStormForConditionalGeneration)},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SoundStormRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(self.config, module.inv_freq.device))


class SoundStormModel(SoundStormPreTrainedModel):
    """The Conformer stack without output heads: token ids in, per-frame hidden states out."""

    _auto_class = "AutoModel"  # a saved folder carries this file, for `trust_remote_code=True` (see `save_pretrained`)

    def __init__(self, config: SoundStormConfig):
        super().__init__(config)
        self.embeddings = SoundStormEmbeddings(config)
        self.rotary_emb = SoundStormRotaryEmbedding(config)
        self.layers = nn.ModuleList(SoundStormConformerBlock(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The semantic table: `semantic_ids` are the model's main input."""
        return self.embeddings.semantic_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.semantic_embeddings = value

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
        if batch == 0:
            raise ValueError("`acoustic_ids` is an empty batch (0 rows).")
        if num_frames == 0:
            raise ValueError("`acoustic_ids` is an empty sequence (0 frames).")
        config.check_num_frames(num_frames)
        read_values = reads_values(acoustic_ids, self.training)
        check_token_ids(
            "acoustic_ids", acoustic_ids, config.mask_token_id + 1, "codebook_size + 1 (MASK)", read_values
        )
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
        check_token_ids(
            "semantic_ids", semantic_ids, config.semantic_null_id + 1, "semantic_vocab_size + 1 (null id)", read_values
        )
        if attention_mask is not None and tuple(attention_mask.shape) != (batch, num_frames):
            raise ValueError(
                f"`attention_mask` must have shape (batch, frames) = {(batch, num_frames)}, "
                f"got {tuple(attention_mask.shape)}."
            )

    @capture_outputs
    def forward(
        self,
        semantic_ids: torch.LongTensor | None = None,
        acoustic_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        semantic_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        hidden_states = self.embeddings(acoustic_ids, semantic_embeds)  # (batch, frames, hidden)
        position_embeddings = self.rotary_emb(hidden_states)

        frame_mask = None if attention_mask is None else attention_mask[:, :, None].to(hidden_states.dtype)
        # (batch, 1, frames, frames) in the form the attention implementation wants; None when there is no mask. A
        # given mask is used as given: checking whether it hides anything would read it on the host at every pass
        # (the decoder passes None when nothing is hidden).
        attention_mask = create_bidirectional_mask(
            self.config, hidden_states, attention_mask, allow_is_bidirectional_skip=attention_mask is None
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, position_embeddings, attention_mask, frame_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


def level_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-level loss, accuracy and target count of a training forward, for logging (training and evaluation).

    Args:
        logits (`torch.Tensor` of shape `(batch, levels, frames, vocab)`): the logits of a forward with `labels`.
        labels (`torch.LongTensor` of shape `(batch, levels, frames)`): its labels, -100 where no loss is taken.

    Returns:
        `level_loss` and `level_accuracy` `(levels,)`, NaN for a level without targets, and `level_num_targets`
        `(levels,)` to weight them when aggregating batches. Everything stays on the device, with no host read.
    """
    labelled = labels != IGNORE_INDEX  # (batch, levels, frames)
    losses = F.cross_entropy(
        logits.detach().flatten(0, 2).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view_as(labels)  # 0 where unlabelled
    correct = (logits.argmax(dim=-1) == labels) & labelled
    num_targets = labelled.sum(dim=(0, 2))
    return {
        "level_loss": losses.sum(dim=(0, 2)) / num_targets,
        "level_accuracy": correct.sum(dim=(0, 2)) / num_targets,
        "level_num_targets": num_targets,
    }


class SoundStormForConditionalGeneration(SoundStormGenerationMixin, SoundStormPreTrainedModel):
    """SoundStorm with one output head per RVQ level: the masked-token loss in `forward`, MaskGIT decoding in `generate`."""

    generation_config_class = SoundStormGenerationConfig
    _auto_class = "AutoModelForMaskedLM"  # its forward is masked-token prediction, its training objective

    def __init__(self, config: SoundStormConfig):
        super().__init__(config)
        self.model = SoundStormModel(config)
        self.heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.codebook_size) for _ in range(config.num_levels)
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        semantic_ids: torch.LongTensor | None = None,
        acoustic_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        semantic_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch, levels, frames)`): target codes, -100 where no loss is taken.
            The loss is the cross-entropy averaged over the labelled tokens, each scored by its own level's head.

        Returns `logits` of shape `(batch, levels, frames, codebook_size)`, every head on every frame, with or without
        `labels`; one head's logits are `level_logits(hidden_states, level)`.
        """
        outputs = self.model(
            semantic_ids=semantic_ids,
            acoustic_ids=acoustic_ids,
            attention_mask=attention_mask,
            semantic_embeds=semantic_embeds,
            **kwargs,
        )
        logits = torch.stack([head(outputs.last_hidden_state) for head in self.heads], dim=1)  # (B, Q, T, V)
        loss = None
        if labels is not None:
            self.check_labels(labels, logits.shape[:-1])
            # `ignore_index` rather than selecting the labelled tokens: no shape that depends on values, no host read.
            loss = F.cross_entropy(logits.flatten(0, 2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def level_logits(self, hidden_states: torch.Tensor, level: int) -> torch.Tensor:
        """(batch, frames, hidden) -> (batch, frames, codebook_size) through the head of `level` (0-based)."""
        if not 0 <= level < self.config.num_levels:
            raise ValueError(f"`level` must be in [0, {self.config.num_levels}), got {level}.")
        return self.heads[level](hidden_states)

    def check_labels(self, labels: torch.Tensor, shape: torch.Size) -> None:
        """Raises a `ValueError` naming `labels` for a wrong shape, a code outside the codebook, or no labelled token
        at all (the mean loss would be NaN); the value checks are skipped where `reads_values` says so."""
        if tuple(labels.shape) != tuple(shape):
            raise ValueError(
                f"`labels` must have the shape of `acoustic_ids` (batch, levels, frames), got {tuple(labels.shape)}."
            )
        read_values = reads_values(labels, self.training)
        labelled = labels != IGNORE_INDEX
        check_token_ids("labels", labels.where(labelled, 0), self.config.codebook_size, "codebook_size", read_values)
        if read_values and not bool(labelled.any()):
            raise ValueError("`labels` has no labelled token (all -100): there is nothing to learn from.")

    def adjust_generation_fn(self, generation_config, from_auto_class, from_pipeline, pretrained_model_name_or_path,
                             cache_dir=None, force_download=False, proxies=None, local_files_only=False, token=None,
                             revision=None, subfolder="", trust_remote_code=None, **kwargs):
        """Loads the folder's `generation_config.json` as a [`SoundStormGenerationConfig`], checked against the
        model. A folder without one keeps the defaults for its config; an invalid one is an error, not a fallback."""
        if generation_config is not None:
            self.generation_config = self.generation_config_class.from_dict(generation_config.to_dict())
        elif pretrained_model_name_or_path is not None:
            self.generation_config = self.generation_config_class.from_folder_or_default(
                pretrained_model_name_or_path,
                self.config,
                cache_dir=cache_dir,
                force_download=force_download,
                proxies=proxies,
                local_files_only=local_files_only,
                token=token,
                revision=revision,
                subfolder=subfolder,
            )
        self.generation_config.validate(num_levels=self.config.num_levels)


# The installed package answers to transformers' Auto classes without remote code. A saved folder's copy of this file,
# loaded with `trust_remote_code=True`, is registered by transformers itself.
if __name__ == "soundstorm_hf.modeling_soundstorm":
    AutoConfig.register(SoundStormConfig.model_type, SoundStormConfig, exist_ok=True)
    AutoModel.register(SoundStormConfig, SoundStormModel, exist_ok=True)
    AutoModelForMaskedLM.register(SoundStormConfig, SoundStormForConditionalGeneration, exist_ok=True)

__all__ = [
    "SoundStormForConditionalGeneration",
    "SoundStormModel",
    "SoundStormPreTrainedModel",
    "level_metrics",
]
