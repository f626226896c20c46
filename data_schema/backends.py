"""Backend configurations: recorded in the manifest as the exact record of how labels were made.

One pydantic model per backend, each with a `name` literal; `StereoConfig` and `MaskConfig` are
discriminated unions over them, so a manifest round-trips to the same typed config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from data_schema._base import Record


class SgbmConfig(Record):
    """OpenCV semi-global block matching with a left-right consistency check."""

    name: Literal["sgbm"] = "sgbm"
    block_size: int = Field(5, ge=1, le=11, description="matching block size, odd, in px")
    num_disparities: int | None = Field(
        None, ge=16, description="search range in px (multiple of 16); None: chosen per pair by a coarse pass"
    )
    min_disparity: int | None = Field(None, description="lowest disparity searched; None: chosen per pair")
    uniqueness_ratio: int = Field(5, ge=0, le=100)
    speckle_window_size: int = Field(100, ge=0)
    speckle_range: int = Field(2, ge=0)
    lr_max_diff_px: float = Field(1.0, gt=0, description="left-right check tolerance in px")
    wls: bool = Field(True, description="edge-aware WLS smoothing (opencv-contrib ximgproc)")
    wls_lambda: float = Field(8000.0, gt=0)
    wls_sigma_color: float = Field(1.2, gt=0)


class FoundationStereoConfig(Record):
    """FoundationStereo (NVIDIA) from a local release checkpoint; cfg.yaml is read from beside it."""

    name: Literal["foundation-stereo"] = "foundation-stereo"
    weights: Path | None = Field(None, description="model_best_bp2.pth of a release; cfg.yaml beside it")
    valid_iters: int = Field(32, ge=1, description="GRU refinement iterations")
    scale: float = Field(1.0, gt=0, le=1.0, description="resize factor applied to the images before inference")
    hiera: bool = Field(False, description="coarse-to-fine inference for images over ~1K px")
    max_disp: int | None = Field(None, ge=1, description="override cfg.yaml max_disp")
    mixed_precision: bool = Field(True, description="bf16 autocast; only on CUDA, float32 on the CPU")
    remove_invisible: bool = Field(True, description="invalidate pixels whose match falls outside the right image")
    lr_check: bool = Field(True, description="confidence from a left-right consistency pass (doubles the cost)")


StereoConfig = Annotated[Union[SgbmConfig, FoundationStereoConfig], Field(discriminator="name")]


class ClassicalMasksConfig(Record):
    """Classical instance proposals from colour and disparity together."""

    name: Literal["classical"] = "classical"
    n_segments: int = Field(400, ge=8, description="SLIC superpixels before merging")
    compactness: float = Field(10.0, gt=0)
    disparity_weight: float = Field(
        1.0, ge=0, description="how strongly disparity separates regions relative to colour"
    )
    depth_jump_rel: float = Field(0.06, gt=0, description="relative disparity jump treated as an object boundary")
    min_area_frac: float = Field(0.002, gt=0, lt=1, description="smallest object as a fraction of the image")
    max_area_frac: float = Field(0.5, gt=0, le=1, description="regions larger than this are background")


class Sam2Config(Record):
    """SAM2 automatic mask generation (official `sam2` package); knobs named after the official arguments."""

    name: Literal["sam2"] = "sam2"
    checkpoint: Path | None = Field(None, description="local SAM2 checkpoint (.pt)")
    config: str = Field("sam2.1_hiera_s", description="config name (sam2.1_hiera_t|s|b+|l) or a YAML path")
    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    multimask_output: bool = True
    mixed_precision: bool = Field(True, description="bf16 autocast; only on CUDA")


MaskConfig = Annotated[Union[ClassicalMasksConfig, Sam2Config], Field(discriminator="name")]
