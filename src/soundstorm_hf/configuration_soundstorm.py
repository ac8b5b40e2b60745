"""Configuration of the SoundStorm model."""

from fractions import Fraction

from transformers import PreTrainedConfig


class SoundStormConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SoundStormForConditionalGeneration`] model: the token grid it works on (RVQ levels,
    codebook size, semantic vocabulary, frame rates), the Conformer's size, and the classifier-free-guidance
    dropout used in training.

    Token ids: acoustic ids live in `[0, codebook_size)` and `codebook_size` is the MASK id
    (`mask_token_id`); semantic ids live in `[0, semantic_vocab_size)` and `semantic_vocab_size` is the
    "no condition" id used for classifier-free guidance (`semantic_null_id`).

    Frame rates: semantic tokens are aligned to acoustic frames by the model itself. The ratio
    `acoustic_frame_rate / semantic_frame_rate` must be an integer `r` (each semantic token covers `r`
    acoustic frames, as in the paper's 25 -> 50 Hz duplication) or the inverse of one (`r` semantic tokens
    per acoustic frame, their embeddings summed).

    Args:
        num_levels (`int`, defaults to 12): RVQ levels Q of the acoustic codec.
        codebook_size (`int`, defaults to 1024): codes per RVQ level.
        semantic_vocab_size (`int`, defaults to 1024): number of semantic token ids (k-means clusters).
        semantic_frame_rate (`float`, defaults to 25.0): semantic tokens per second.
        acoustic_frame_rate (`float`, defaults to 50.0): codec frames per second.
        hidden_size (`int`, defaults to 1024): Conformer width (and embedding size).
        num_hidden_layers (`int`, defaults to 12): Conformer blocks.
        num_attention_heads (`int`, defaults to 16): attention heads per block.
        intermediate_size (`int`, defaults to 4096): width of each feed-forward module.
        conv_kernel_size (`int`, defaults to 5): kernel of the depthwise convolution (odd).
        hidden_dropout (`float`, defaults to 0.1): dropout on residual branches.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        max_frames (`int`, defaults to 1500): longest sequence (in acoustic frames) the model accepts; 30 s at 50 Hz.
        rope_theta (`float`, defaults to 10000.0): base of the rotary position embedding.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of the layer norms.
        initializer_range (`float`, defaults to 0.02): standard deviation of the weight initialisation.
        prompt_dropout (`float`, defaults to 0.0): probability, per training example, of hiding its prompt
            from the model (classifier-free guidance on the voice prompt).
        semantic_dropout (`float`, defaults to 0.0): probability, per training example, of replacing its
            semantic tokens with the null id (classifier-free guidance on the content).
        codec_name_or_path (`str`, *optional*): the acoustic codec the tokens come from (Hub id or a
            subfolder of the model folder), so that a pipeline can be rebuilt from the model alone.
        semantic_tokenizer_name_or_path (`str`, *optional*): the semantic tokenizer, likewise.
    """

    model_type = "soundstorm"
    _auto_class = "AutoConfig"  # a saved folder carries this file, for `trust_remote_code=True`

    def __init__(
        self,
        num_levels: int = 12,
        codebook_size: int = 1024,
        semantic_vocab_size: int = 1024,
        semantic_frame_rate: float = 25.0,
        acoustic_frame_rate: float = 50.0,
        hidden_size: int = 1024,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 16,
        intermediate_size: int = 4096,
        conv_kernel_size: int = 5,
        hidden_dropout: float = 0.1,
        attention_dropout: float = 0.0,
        max_frames: int = 1500,
        rope_theta: float = 10000.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        prompt_dropout: float = 0.0,
        semantic_dropout: float = 0.0,
        codec_name_or_path: str | None = None,
        semantic_tokenizer_name_or_path: str | None = None,
        **kwargs,
    ):
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.semantic_vocab_size = semantic_vocab_size
        self.semantic_frame_rate = semantic_frame_rate
        self.acoustic_frame_rate = acoustic_frame_rate
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.conv_kernel_size = conv_kernel_size
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.max_frames = max_frames
        self.rope_theta = rope_theta
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.prompt_dropout = prompt_dropout
        self.semantic_dropout = semantic_dropout
        self.codec_name_or_path = codec_name_or_path
        self.semantic_tokenizer_name_or_path = semantic_tokenizer_name_or_path
        super().__init__(**kwargs)
        self._validate()

    def _validate(self):
        for name in ("num_levels", "codebook_size", "semantic_vocab_size", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "conv_kernel_size", "max_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if (self.hidden_size // self.num_attention_heads) % 2 != 0:
            raise ValueError("The attention head size must be even for rotary position embeddings.")
        if self.conv_kernel_size % 2 != 1:
            raise ValueError(f"`conv_kernel_size` must be odd to keep frames aligned, got {self.conv_kernel_size}.")
        for name in ("prompt_dropout", "semantic_dropout", "hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        self.semantic_upsampling  # raises if the frame rates do not divide

    @property
    def mask_token_id(self) -> int:
        """Acoustic id of a masked (not yet generated) token."""
        return self.codebook_size

    @property
    def semantic_null_id(self) -> int:
        """Semantic id meaning "no content condition" (classifier-free guidance)."""
        return self.semantic_vocab_size

    @property
    def trained_for_guidance(self) -> bool:
        """Whether classifier-free guidance on the voice prompt (`guidance_scale` other than 1) is meaningful: only a
        model that saw prompts dropped in training (`prompt_dropout` > 0) has a trained unconditional branch."""
        return self.prompt_dropout > 0

    @property
    def semantic_upsampling(self) -> Fraction:
        """Acoustic frames per semantic token: an integer, or 1/k when k semantic tokens share one frame."""
        if self.semantic_frame_rate <= 0 or self.acoustic_frame_rate <= 0:
            raise ValueError("Frame rates must be positive.")
        ratio = Fraction(self.acoustic_frame_rate).limit_denominator(1000) / Fraction(
            self.semantic_frame_rate
        ).limit_denominator(1000)
        if ratio.numerator != 1 and ratio.denominator != 1:
            raise ValueError(
                f"The semantic frame rate ({self.semantic_frame_rate} Hz) and the acoustic frame rate "
                f"({self.acoustic_frame_rate} Hz) must divide one another (ratio {ratio} is not an integer "
                "or the inverse of one)."
            )
        return ratio

    @property
    def alignment_unit(self) -> tuple[int, int]:
        """`(frames, tokens)`: the shortest span on which both streams align, `frames` acoustic frames holding
        `tokens` semantic tokens (one of the two is 1). Crops, windows and prompts start on its boundaries."""
        ratio = self.semantic_upsampling
        return ratio.numerator, ratio.denominator

    def num_semantic_frames(self, num_frames: int) -> int:
        """Semantic tokens needed to condition `num_frames` acoustic frames."""
        frames, tokens = self.alignment_unit
        return -(-num_frames * tokens // frames)

    def num_acoustic_frames(self, num_semantic_frames: int) -> int:
        """Acoustic frames that `num_semantic_frames` semantic tokens cover; they must fill whole frames."""
        frames, tokens = self.alignment_unit
        if num_semantic_frames % tokens:
            raise ValueError(
                f"{num_semantic_frames} semantic tokens do not fill whole acoustic frames ({tokens} tokens per frame)."
            )
        return num_semantic_frames * frames // tokens

    def check_num_frames(self, num_frames: int) -> None:
        """Refuses a sequence longer than `max_frames`, before anything of that size is allocated."""
        if num_frames > self.max_frames:
            raise ValueError(
                f"{num_frames} frames exceed the model's `max_frames` ({self.max_frames}); generate long audio "
                "in windows instead (`generate_long`)."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SoundStormConfig":
        """A named configuration: `"tiny"` (tests), `"small"` (CPU experiments) or `"paper"` (the paper's sizes,
        316M parameters)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})


PRESETS = {
    # A few thousand parameters per layer: unit tests run in seconds.
    "tiny": dict(
        num_levels=4, codebook_size=32, semantic_vocab_size=32, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, hidden_dropout=0.0, max_frames=512,
    ),
    # ~13M parameters: trains and generates on a laptop CPU.
    "small": dict(
        num_levels=8, codebook_size=1024, semantic_vocab_size=512, hidden_size=256, num_hidden_layers=6,
        num_attention_heads=4, intermediate_size=1024,
    ),
    # Borsos et al. (2023), §4.1: 12 layers, 16 heads, width 1024, FFN 4096, kernel 5; 12 x 1024 codes at 50 Hz.
    "paper": dict(
        num_levels=12, codebook_size=1024, semantic_vocab_size=1024, hidden_size=1024, num_hidden_layers=12,
        num_attention_heads=16, intermediate_size=4096,
    ),
}
