"""Build the SAM 3 image model from the official `sam3` package: no hub access, weights strictly from disk.

`load_sam3(arch, checkpoint, bpe_path, device=...)` is the one entry point:

- `arch` is "sam3" (the released image model: ViT-L/14 at 1008 px with 32 blocks, a 24-layer text
  encoder of width 1024, a 6 + 6 layer fusion encoder / DETR decoder with 200 queries and the pixel-decoder
  segmentation head) or the path of a JSON file of `Sam3Arch` fields (a smaller model of the same layout,
  e.g. the seeded random one of `labeler.testing.sam3_tiny`). The modules are the package's own
  (`ViT`, `Sam3DualViTDetNeck`, `VETextEncoder`, `TransformerEncoderFusion`, `TransformerDecoder`,
  `UniversalSegmentationHead`, `SequenceGeometryEncoder`, `DotProductScoring`, `Sam3Image`), built with
  the sizes of `Sam3Arch`; `Sam3Arch()` gives what `sam3.model_builder.build_sam3_image_model` builds
  (tests compare the two on the meta device); its `tracker_*` sizes are the video model's
  (segment/sam3_video_model.py, `--track` on CUDA);
- the text encoder's BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`, CLIP's) is not in the `sam3` wheel:
  `--sam3-bpe-path` names it, else the copy the `open_clip_torch` package ships is used;
- the checkpoint is the release layout (`sam3.pt`: `{"model": {"detector.…": …, "tracker.…": …}}`, or
  the same dict unwrapped); the `detector.` part must match the image model key for key and shape for
  shape (the video model's `tracker.` keys and the detector's second neck, `sam2_convs`, which only the
  tracker reads, are not used by the image model and are ignored; `--track` on CUDA loads them, see
  segment/sam3_video.py). Buffers
  the modules compute at construction (rotary `freqs_cis`, relative coordinates) may be absent; when
  present they must have the model's shape. Anything else is a one-line `Sam3WeightsError` naming
  `--sam3-checkpoint` (the official loader loads non-strictly and only prints what it skipped).

Nothing is ever downloaded. Importing this module imports neither torch nor sam3.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator

from data_schema.record import Record
from labeler.errors import LabelerError, WeightsError

if TYPE_CHECKING:
    import torch

CHECKPOINT_FLAG = "--sam3-checkpoint"
ARCH_FLAG = "--sam3-arch"
BPE_FLAG = "--sam3-bpe-path"
RELEASED_CHECKPOINT = "sam3.pt"  # of the Hugging Face repository facebook/sam3 (gated; fetched by the user)
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# Buffers the modules compute from their sizes; a release checkpoint need not carry them.
_COMPUTED_BUFFERS = ("freqs_cis", "relative_coords")


class Sam3WeightsError(WeightsError):
    """A missing, unreadable or mismatched SAM 3 checkpoint; one line naming the flag."""


class Sam3ConfigError(LabelerError, ValueError):
    """An `--sam3-arch` that is neither "sam3" nor a readable architecture file, or no BPE vocabulary."""


class Sam3Arch(Record):
    """Sizes of a SAM 3 image model; the defaults are the released model's."""

    resolution: int = Field(1008, ge=14, description="square model input side, px (a multiple of patch)")
    patch_size: int = Field(14, ge=1)
    vit_dim: int = Field(1024, ge=8, description="ViT width")
    vit_depth: int = Field(32, ge=1)
    vit_heads: int = Field(16, ge=1)
    vit_mlp_ratio: float = Field(4.625, gt=0)
    vit_window: int = Field(24, ge=1, description="window attention side, in patches")
    vit_global_blocks: tuple[int, ...] = Field((7, 15, 23, 31), description="blocks with global attention")
    vit_pretrain_size: int = Field(336, ge=14, description="image side of the absolute position table, px")
    text_width: int = Field(1024, ge=8)
    text_heads: int = Field(16, ge=1)
    text_layers: int = Field(24, ge=1)
    text_context: int = Field(32, ge=4, description="text tokens per prompt")
    d_model: int = Field(256, ge=8, description="width of the fusion encoder, decoder and heads")
    heads: int = Field(8, ge=1, description="attention heads of the fusion encoder / decoder")
    ffn_dim: int = Field(2048, ge=8)
    encoder_layers: int = Field(6, ge=1)
    decoder_layers: int = Field(6, ge=1)
    queries: int = Field(200, ge=1, description="DETR object queries per (image, prompt)")
    geometry_layers: int = Field(3, ge=1)
    # The video model's tracker (`--track`): SAM 2's memory attention and memory encoder at d_model width.
    tracker_layers: int = Field(4, ge=1, description="memory-attention layers of the tracker")
    tracker_ffn_dim: int = Field(2048, ge=8, description="feed-forward width of the memory attention")
    tracker_mem_dim: int = Field(64, ge=4, description="channels of an encoded memory frame")
    tracker_num_maskmem: int = Field(7, ge=1, description="memory frames: the prompt frame + recent ones")
    tracker_max_obj_ptrs: int = Field(16, ge=1, description="frames back whose object pointers it reads")

    @model_validator(mode="after")
    def _memory_tokens(self) -> Sam3Arch:
        # the tracker splits a d_model-wide object pointer into d_model / tracker_mem_dim memory tokens
        if self.d_model % self.tracker_mem_dim:
            raise ValueError(
                f"d_model {self.d_model} is not a multiple of tracker_mem_dim {self.tracker_mem_dim}"
            )
        return self


OFFICIAL = Sam3Arch()


def resolve_arch(arch: str) -> Sam3Arch:
    """ "sam3" -> the released sizes; a JSON path -> its `Sam3Arch`."""
    if arch == "sam3":
        return OFFICIAL
    path = Path(arch).expanduser()
    if path.suffix != ".json" or not path.is_file():
        raise Sam3ConfigError(f'{ARCH_FLAG} {arch!r}: neither "sam3" (the released model) nor a .json file')
    try:
        return Sam3Arch.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as err:
        msg = " ".join(str(err).split())[:160]
        raise Sam3ConfigError(f"{path}: not a SAM 3 architecture file ({ARCH_FLAG}): {msg}") from None


def find_bpe(bpe_path: str | Path | None) -> Path:
    """The BPE vocabulary file: the flag's, else the copy open_clip ships; one line when there is none."""
    if bpe_path is not None:
        path = Path(bpe_path).expanduser()
        if path.is_file():
            return path
        raise Sam3ConfigError(f"{path}: no such BPE vocabulary file; pass {BPE_FLAG} the CLIP {BPE_NAME}")
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it (torch)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / BPE_NAME
        if path.is_file():
            return path
    raise Sam3ConfigError(
        f"sam3 needs CLIP's BPE vocabulary {BPE_NAME} (not in the sam3 wheel): pip install open_clip_torch "
        f"(it ships open_clip/{BPE_NAME}) or pass {BPE_FLAG} PATH"
    )


def check_checkpoint(checkpoint: str | Path | None) -> Path:
    """The checkpoint path, or a one-line error naming the flag."""
    if checkpoint is None:
        raise Sam3WeightsError(
            f"sam3 needs local weights: pass {CHECKPOINT_FLAG} PATH to {RELEASED_CHECKPOINT} (Hugging Face "
            "facebook/sam3); nothing is downloaded"
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise Sam3WeightsError(f"{path}: no such checkpoint file; pass {CHECKPOINT_FLAG} the local sam3.pt")
    return path


@contextlib.contextmanager
def quiet_sam3_import() -> Iterator[None]:
    """Import sam3 without the two warnings its modules raise at import, which tell a user nothing:
    torch.jit.script's deprecation, and "CUDA is not available ... Disabling autocast" from decorators
    evaluated on a machine without CUDA (labeler chooses the dtype per device itself)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
        )
        warnings.filterwarnings("ignore", message=r"CUDA is not available or torch_xla", category=UserWarning)
        yield


def _attention(a: Sam3Arch, *, dropout: float = 0.1, batch_first: bool | None = None) -> Any:
    with quiet_sam3_import():
        from sam3.model.model_misc import MultiheadAttentionWrapper as Attention
    extra = {} if batch_first is None else {"batch_first": batch_first}
    return Attention(num_heads=a.heads, dropout=dropout, embed_dim=a.d_model, **extra)


def _sine(a: Sam3Arch) -> Any:
    # No precomputed cache (the official builder fills it on "cuda", which fails on a CPU machine and
    # puts it on the wrong GPU for cuda:1): the encoding is computed, and cached, at the first forward.
    with quiet_sam3_import():
        from sam3.model.position_encoding import PositionEmbeddingSine
    return PositionEmbeddingSine(num_pos_feats=a.d_model, normalize=True, scale=None, temperature=10000)


def _vision(a: Sam3Arch, *, sam2_neck: bool = False) -> Any:
    """The ViT trunk inside its dual ViTDet neck (`sam2_neck`: with the second neck the video model's
    tracker reads)."""
    with quiet_sam3_import():
        from sam3.model.necks import Sam3DualViTDetNeck
        from sam3.model.vitdet import ViT
    d = a.d_model
    vit = ViT(
        img_size=a.resolution,
        pretrain_img_size=a.vit_pretrain_size,
        patch_size=a.patch_size,
        embed_dim=a.vit_dim,
        depth=a.vit_depth,
        num_heads=a.vit_heads,
        mlp_ratio=a.vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.1,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=a.vit_global_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=a.vit_window,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
    )
    neck = Sam3DualViTDetNeck(
        position_encoding=_sine(a),
        d_model=d,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=vit,
        add_sam2_neck=sam2_neck,
    )
    return neck


def _text(a: Sam3Arch, bpe_path: str | Path) -> Any:
    with quiet_sam3_import():
        from sam3.model.text_encoder_ve import VETextEncoder
        from sam3.model.tokenizer_ve import SimpleTokenizer
    d = a.d_model
    text = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=str(bpe_path)),
        d_model=d,
        width=a.text_width,
        heads=a.text_heads,
        layers=a.text_layers,
        context_length=a.text_context,
    )
    return text


def _encoder(a: Sam3Arch) -> Any:
    """The fusion encoder (image features attend to the text)."""
    with quiet_sam3_import():
        from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    d = a.d_model
    encoder = TransformerEncoderFusion(
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=a.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=_attention(a, batch_first=True),
            cross_attention=_attention(a, batch_first=True),
        ),
        num_layers=a.encoder_layers,
        d_model=d,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    return encoder


def _decoder(a: Sam3Arch) -> Any:
    """The DETR-style query decoder with box refinement and the presence token."""
    with quiet_sam3_import():
        from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    d = a.d_model
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=a.ffn_dim,
            dropout=0.1,
            cross_attention=_attention(a),
            n_heads=a.heads,
            use_text_cross_attention=True,
        ),
        num_layers=a.decoder_layers,
        num_queries=a.queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=d,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=None,  # as for the position encoding: its coordinate cache is filled at the first forward
        stride=None,
        use_act_checkpoint=True,
        presence_token=True,
    )
    return decoder


def _scoring(a: Sam3Arch) -> Any:
    with quiet_sam3_import():
        from sam3.model.model_misc import MLP, DotProductScoring
    from torch import nn

    d = a.d_model
    scoring = DotProductScoring(
        d_model=d,
        d_proj=d,
        prompt_mlp=MLP(
            input_dim=d,
            hidden_dim=a.ffn_dim,
            output_dim=d,
            num_layers=2,
            dropout=0.1,
            residual=True,
            out_norm=nn.LayerNorm(d),
        ),
    )
    return scoring


def _mask_head(a: Sam3Arch) -> Any:
    with quiet_sam3_import():
        from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    d = a.d_model
    head = UniversalSegmentationHead(
        hidden_dim=d,
        upsampling_stages=3,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=True,
        cross_attend_prompt=_attention(a, dropout=0),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=d),
    )
    return head


def _geometry(a: Sam3Arch) -> Any:
    """The box / point prompt encoder."""
    with quiet_sam3_import():
        from sam3.model.encoder import TransformerEncoderLayer
        from sam3.model.geometry_encoders import SequenceGeometryEncoder
    d = a.d_model
    geometry = SequenceGeometryEncoder(
        pos_enc=_sine(a),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=d,
        num_layers=a.geometry_layers,
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=d,
            dim_feedforward=a.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=False,
            pre_norm=True,
            self_attention=_attention(a, batch_first=False),
            pos_enc_at_cross_attn_queries=False,
            pos_enc_at_cross_attn_keys=True,
            cross_attention=_attention(a, batch_first=False),
        ),
        use_act_ckpt=True,
        add_cls=True,
        add_post_encode_proj=True,
    )
    return geometry


def build_sam3(arch: Sam3Arch, bpe_path: str | Path) -> Any:
    """The `Sam3Image` of `arch` with the package's own initialisation (eval mode, CPU, float32). The parts
    are built in the official builder's order, so a seeded build draws the same initial weights."""
    with quiet_sam3_import():
        from sam3.model.model_misc import TransformerWrapper
        from sam3.model.sam3_image import Sam3Image
        from sam3.model.vl_combiner import SAM3VLBackbone

    a, d = arch, arch.d_model
    neck = _vision(a)
    text = _text(a, bpe_path)
    encoder = _encoder(a)
    decoder = _decoder(a)
    scoring = _scoring(a)
    head = _mask_head(a)
    geometry = _geometry(a)
    model = Sam3Image(
        backbone=SAM3VLBackbone(visual=neck, text=text, scalp=1),
        transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d),
        input_geometry_encoder=geometry,
        segmentation_head=head,
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=scoring,
        use_instance_query=False,
        multimask_output=True,
        inst_interactive_predictor=None,
        matcher=None,
    )
    return model.eval()


def load_sam3(
    arch: str, checkpoint: str | Path | None, bpe_path: str | Path | None, *, device: str = "cpu"
) -> Any:
    """Build the image model of `arch` and load `checkpoint` strictly; eval mode, float32, on `device`.

    Raises:
        Sam3ConfigError: unknown arch or no BPE vocabulary.
        Sam3WeightsError: checkpoint missing or unreadable, or keys / shapes that do not match `arch`.
    """
    sizes = resolve_arch(arch)
    vocab = find_bpe(bpe_path)
    ckpt = check_checkpoint(checkpoint)
    import torch

    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's RNG
        model = build_sam3(sizes, vocab)
    return load_strict(model, image_state_dict(read_checkpoint(ckpt)), ckpt, f"{arch} image model", device)


def load_strict(model: Any, state: dict[str, Any], ckpt: Path, what: str, device: str) -> Any:
    """Load `state` into `model` with every key and shape checked (buffers the model computes itself may
    be absent), or a one-line Sam3WeightsError naming `ckpt` and `what` it should have been; eval mode,
    on `device`."""
    from labeler.models.checkpoints import compare_keys

    expected = model.state_dict()
    computed = {k for k in expected if k.rsplit(".", 1)[-1] in _COMPUTED_BUFFERS and k not in state}
    mismatch = compare_keys({k: v for k, v in expected.items() if k not in computed}, state)
    if mismatch:
        raise Sam3WeightsError(
            f"{ckpt}: does not match the {what} ({mismatch.describe()}); pass {CHECKPOINT_FLAG} "
            f"{RELEASED_CHECKPOINT} (or the {ARCH_FLAG} it was trained with)"
        )
    model.load_state_dict(state, strict=not computed)
    return model.to(device).eval()


def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's tensors (`{"model": ...}` unwrapped), or a one-line error."""
    import torch

    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — a corrupt or foreign file becomes the one line
        msg = " ".join(str(err).split())[:160] or type(err).__name__
        raise Sam3WeightsError(
            f"{ckpt}: not a readable torch checkpoint ({msg}); pass {CHECKPOINT_FLAG} the local sam3.pt"
        ) from None
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        blob = blob["model"]
    if not isinstance(blob, dict) or not any(str(k).startswith("detector.") for k in blob):
        raise Sam3WeightsError(
            f"{ckpt}: no 'detector.' weights in it (a SAM 3 release checkpoint has them); pass "
            f"{CHECKPOINT_FLAG} the local sam3.pt"
        )
    return blob


# The detector's second neck, which only the video model's tracker reads (`add_sam2_neck`).
_TRACKER_NECK = "backbone.vision_backbone.sam2_convs."


def image_state_dict(blob: dict[str, Any]) -> dict[str, Any]:
    """The image model's part of a release state dict: `detector.` keys, prefix removed, less the second
    neck the video model's tracker reads."""
    out = {k.removeprefix("detector."): v for k, v in blob.items() if k.startswith("detector.")}
    return {k: v for k, v in out.items() if not k.startswith(_TRACKER_NECK)}


@contextlib.contextmanager
def without_pinned_memory() -> Iterator[None]:
    """On a machine without CUDA, let `Tensor.pin_memory` return the tensor itself for the duration.

    The package's geometry encoder pins a 4-element tensor before copying it to the model's device
    (`sam3/model/geometry_encoders.py`), which raises where there is no CUDA driver, so its image model
    cannot run on a CPU-only machine as released. Pinning only speeds up host-to-GPU copies; without a
    GPU, skipping it changes no value. With CUDA this does nothing.
    """
    import torch

    if torch.cuda.is_available():
        yield
        return
    pin = torch.Tensor.pin_memory
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self  # type: ignore[method-assign]  # see above
    try:
        yield
    finally:
        torch.Tensor.pin_memory = pin  # type: ignore[method-assign]  # restores the method replaced above


def release_state_dict(model: torch.nn.Module) -> dict[str, Any]:
    """`{"model": ...}` in the release layout (the inverse of `image_state_dict`), for writing checkpoints."""
    return {"model": {f"detector.{k}": v for k, v in model.state_dict().items()}}
