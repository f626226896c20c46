"""A tiny SAM2 with deterministic random weights, for tests and CPU benchmarks (nothing is downloaded).

`write_tiny_sam2(folder)` writes `sam2_tiny.yaml` (the official `sam2.1_hiera_t` config, shrunk: a
256 px input instead of 1024, Hiera with 5 blocks at width 8, a 32-channel neck and mask decoder, one
memory-attention layer) and `sam2_tiny.pt` (`{"model": state_dict}` of that model initialised under
`torch.manual_seed(seed)`), the layout of a SAM 2.1 release checkpoint, so it goes through the
user-facing loader like a real one. 0.64 M parameters, 2.7 MB; a 96 x 128 image with 16 prompts takes
well under a second on a CPU core.

Random weights give masks that are speckles over the whole image (their boxes span it, so box NMS merges
them all) with predicted IoU near 0.5 and stability near 0: `OPEN_THRESHOLDS` lets them through.
For a model that finds objects, `labeler.testing.sam2_colour.use_colour_network` swaps a colour-similarity
encoder and decoder into the loaded model.

`official_generator` builds the official `SAM2AutomaticMaskGenerator` on the same model and settings
(the reference of the parity test and the benchmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_schema.backends import Sam2Config

CONFIG_NAME = "sam2_tiny.yaml"
CHECKPOINT_NAME = "sam2_tiny.pt"

_WIDTH = 8  # Hiera embed dim of stage 1 (released tiny: 96)
_D_MODEL = 32  # neck / prompt encoder / mask decoder width (released: 256)
_MEM_DIM = 16  # memory encoder output width (released: 64)

_IMAGE_SIZE = 256  # model input side (released: 1024); low-resolution masks are a quarter of it

_OVERRIDES: dict[str, Any] = {
    "model": {
        "image_size": _IMAGE_SIZE,
        "image_encoder": {
            "trunk": {"embed_dim": _WIDTH, "num_heads": 1, "stages": [1, 1, 2, 1], "global_att_blocks": [3]},
            "neck": {
                "d_model": _D_MODEL,
                "backbone_channel_list": [8 * _WIDTH, 4 * _WIDTH, 2 * _WIDTH, _WIDTH],
                "position_encoding": {"num_pos_feats": _D_MODEL},
            },
        },
        "memory_attention": {
            "d_model": _D_MODEL,
            "num_layers": 1,
            "layer": {
                "d_model": _D_MODEL,
                "dim_feedforward": 2 * _D_MODEL,
                "self_attention": {"embedding_dim": _D_MODEL, "feat_sizes": [_IMAGE_SIZE // 16] * 2},
                "cross_attention": {
                    "embedding_dim": _D_MODEL,
                    "kv_in_dim": _MEM_DIM,
                    "feat_sizes": [_IMAGE_SIZE // 16] * 2,
                },
            },
        },
        "memory_encoder": {
            "out_dim": _MEM_DIM,
            "in_dim": _D_MODEL,
            "position_encoding": {"num_pos_feats": _MEM_DIM},
            "mask_downsampler": {"embed_dim": _D_MODEL},
            "fuser": {"num_layers": 1, "layer": {"dim": _D_MODEL}},
        },
    }
}


def tiny_model_config() -> Any:
    """The shrunk model config as an OmegaConf DictConfig (the official t config with `_OVERRIDES` merged)."""
    from omegaconf import OmegaConf

    from labeler.segment.sam2_model import resolve_config

    base = OmegaConf.load(resolve_config("sam2.1_hiera_t"))
    return OmegaConf.merge(base, OmegaConf.create(_OVERRIDES))


def write_tiny_sam2(folder: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Write the tiny config and a checkpoint of its randomly initialised model.

    Args:
        folder: where to write `sam2_tiny.yaml` and `sam2_tiny.pt` (created if absent).
        seed: torch seed of the initialisation; the same seed gives the same weights.

    Returns:
        (config_path, checkpoint_path).
    """
    import torch
    from omegaconf import OmegaConf

    from labeler.segment.sam2_model import instantiate_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_model_config()
    config_path = folder / CONFIG_NAME
    config_path.write_text("# @package _global_\n" + OmegaConf.to_yaml(cfg))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate_model(cfg)
    checkpoint_path = folder / CHECKPOINT_NAME
    torch.save({"model": model.state_dict()}, checkpoint_path)
    return config_path, checkpoint_path


OPEN_THRESHOLDS: dict[str, Any] = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}
"""Generator settings under which the random model's masks come out: 16 prompts x 3 masks, none
dropped by the quality thresholds, none merged by NMS (its masks are speckles whose boxes span the image)."""


def tiny_sam2_config(paths: tuple[Path, Path], **overrides: Any) -> Sam2Config:
    """A `Sam2Config` for the tiny model written by `write_tiny_sam2`, thresholds opened (overridable)."""
    from data_schema.backends import Sam2Config

    config, checkpoint = paths
    return Sam2Config(checkpoint=checkpoint, config=str(config), **{**OPEN_THRESHOLDS, **overrides})


def official_generator(model: Any, config: Sam2Config) -> Any:
    """The official `SAM2AutomaticMaskGenerator` over `model` with the settings of `config` (binary masks).

    The official image predictor hard-codes the backbone feature sizes of a 1024 px model; for another
    input size (the tiny model's 256 px) they are set from the model, which is all that differs.
    """
    import warnings

    from labeler.segment.sam2_model import import_sam2

    import_sam2()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    settings = config.model_dump(exclude={"name", "checkpoint", "config", "mixed_precision"})
    with warnings.catch_warnings():  # the predictor's transforms use the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    s = model.image_size
    generator.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return generator
