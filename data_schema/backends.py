"""Backend configurations: recorded in the manifest as the exact record of how labels were made.

One pydantic model per backend, each with a `name` literal; `StereoConfig` and `MaskConfig` are
discriminated unions over them, so a manifest round-trips to the same typed config.

A config also declares which of its fields the `labeler pseudo-label` / `run` command line exposes
(`cli_flags`); each flag's default and help text are the field's own, so they are written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, field_validator, model_validator

from data_schema.record import Record


class BackendConfig(Record):
    """A backend's settings; subclasses add a `name` literal (the registry name) and their fields."""

    # field -> command-line flag (kept as spelled: flags are a contract). A bool field gets --x/--no-x.
    cli_flags: ClassVar[Mapping[str, str]] = {}
    # A mask backend that follows objects over a sequence itself under --track (its masks then depend on
    # the tracking settings); the others' objects are linked by association after labelling.
    tracks_objects: ClassVar[bool] = False

    def tracks_itself(self) -> bool:
        """Whether, under --track, this config's backend follows objects itself (`track_masks`) rather than
        having its per-frame objects linked by association; a config may decide per instance (sam3)."""
        return self.tracks_objects

    def key_dump(self) -> dict[str, Any]:
        """The settings that enter the run key (labeler/dataset/runkey.py): all of them, unless a config
        leaves out fields that change nothing in its run (so older datasets keep their key)."""
        return self.model_dump(mode="json")


def backend_name(cls: type[BackendConfig]) -> str:
    """The registry name a config class selects (its `name` literal)."""
    return str(cls.model_fields["name"].default)


def config_classes(union: Any) -> tuple[type[BackendConfig], ...]:
    """The config classes of a discriminated union (`StereoConfig`, `MaskConfig`), in declared order."""
    (members, *_) = get_args(union)
    return get_args(members)


class SgbmConfig(BackendConfig):
    """OpenCV semi-global matching with a left-right consistency check and optional WLS hole filling."""

    name: Literal["sgbm"] = "sgbm"
    mode: Literal["3way", "sgbm", "hh", "hh4"] = Field(
        "3way", description="OpenCV SGBM variant: 3way (fast), sgbm (5 paths), hh (8 paths, full DP), hh4"
    )
    color: bool = Field(True, description="match on RGB (True) or on grey (False)")
    block_size: int = Field(3, ge=1, le=11, description="matching block size, odd, in px")
    p1_per_px: int = Field(8, ge=0, description="SGM small-jump penalty per channel per block pixel")
    p2_per_px: int = Field(32, ge=1, description="SGM large-jump penalty per channel per block pixel; > p1")
    pre_filter_cap: int = Field(15, ge=1, le=63, description="clip of the x-gradient prefilter")
    num_disparities: int | None = Field(
        None, ge=16, description="search range in px (multiple of 16); None: chosen per pair by a coarse pass"
    )
    min_disparity: int | None = Field(
        None, description="lowest disparity searched when num_disparities is set (default 0)"
    )
    coarse_scale: int = Field(4, ge=1, le=16, description="downscale factor of the range-finding coarse pass")
    max_disparity_frac: float = Field(
        0.5, gt=0, le=1, description="widest disparity the coarse pass searches, as a fraction of image width"
    )
    uniqueness_ratio: int = Field(5, ge=0, le=100)
    speckle_window_size: int = Field(100, ge=0)
    speckle_range: int = Field(2, ge=0)
    lr_max_diff_px: float = Field(1.0, gt=0, description="left-right check tolerance in px")
    wls: bool = Field(
        True, description="edge-aware WLS (fast global smoother) fill of rejected pixels seen by both views"
    )
    wls_lambda: float = Field(8000.0, gt=0, description="WLS smoothness weight (fast global smoother lambda)")
    wls_sigma_color: float = Field(1.2, gt=0, description="WLS edge sensitivity to the left image's colour")
    wls_min_support: float = Field(
        0.1, ge=0, le=1, description="least share of consistent neighbours a WLS-filled pixel needs, else NaN"
    )

    @field_validator("block_size")
    @classmethod
    def _odd_block(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"block_size must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _range(self) -> SgbmConfig:
        if self.num_disparities is not None and self.num_disparities % 16:
            raise ValueError(f"num_disparities must be a multiple of 16, got {self.num_disparities}")
        if self.min_disparity is not None and self.num_disparities is None:
            raise ValueError("min_disparity needs num_disparities; leave both None to choose them per pair")
        if self.p2_per_px <= self.p1_per_px:
            raise ValueError(f"p2_per_px ({self.p2_per_px}) must exceed p1_per_px ({self.p1_per_px})")
        return self


class FoundationStereoConfig(BackendConfig):
    """FoundationStereo (NVIDIA) from a local release checkpoint; cfg.yaml is read from beside it."""

    cli_flags: ClassVar[Mapping[str, str]] = {
        "weights": "--stereo-weights",
        "valid_iters": "--valid-iters",
        "scale": "--scale",
        "hiera": "--hiera",
        "max_disp": "--max-disp",
    }

    name: Literal["foundation-stereo"] = "foundation-stereo"
    weights: Path | None = Field(None, description="model_best_bp2.pth of a release; cfg.yaml beside it")
    valid_iters: int = Field(32, ge=1, description="GRU refinement iterations")
    scale: float = Field(
        1.0, gt=0, le=1.0, description="resize factor applied to the images before inference"
    )
    hiera: bool = Field(False, description="coarse-to-fine inference for images over ~1K px")
    max_disp: int | None = Field(
        None,
        ge=32,
        multiple_of=32,  # the 3-D hourglass halves the 1/4-resolution disparity axis three times
        description="override of cfg.yaml max_disp (px at inference scale)",
    )
    mixed_precision: bool | None = Field(
        None,
        description="autocast (amp_dtype) on CUDA; None: as the release's cfg.yaml says; float32 on the CPU",
    )
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        "float16", description="autocast dtype on CUDA (the release runs float16; bfloat16 is a choice)"
    )
    remove_invisible: bool = Field(
        True, description="invalidate pixels whose match falls outside the right image"
    )
    lr_check: bool = Field(
        True, description="confidence from a left-right consistency pass (doubles the cost)"
    )
    consistency_px: float = Field(
        1.0,
        gt=0,
        description="left-right tolerance in input px (beyond it: NaN), also the confidence scale",
    )
    detect_swapped: bool = Field(True, description="refuse a pair whose left and right images look swapped")
    batch_size: int = Field(
        8,
        ge=1,
        description="at most this many pairs of equal size per forward pass; the pipeline's --batch-size "
        "decides how many arrive together (default 1)",
    )


StereoConfig = Annotated[SgbmConfig | FoundationStereoConfig, Field(discriminator="name")]


class ClassicalMasksConfig(BackendConfig):
    """Classical instance proposals from colour and disparity (superpixels, merging walled by depth jumps)."""

    # Whether the backend's masks carry a stability score of their own (objects record it only then).
    has_stability: ClassVar[bool] = False

    name: Literal["classical"] = "classical"
    work_max_side: int = Field(320, ge=32, description="longest image side (px) the segmentation works at")
    n_segments: int = Field(400, ge=8, description="watershed superpixels (seeds) before merging")
    compactness: float = Field(0.01, ge=0, description="compact-watershed compactness (0: plain watershed)")
    disparity_weight: float = Field(
        1.0, ge=0, description="weight of disparity against colour in separating regions (0: colour only)"
    )
    depth_jump_rel: float = Field(0.06, gt=0, description="relative disparity jump that walls regions apart")
    merge_threshold: float = Field(
        10.0, gt=0, description="largest texture-normalized Lab distance between regions that still merge"
    )
    min_area_frac: float = Field(0.002, gt=0, lt=1, description="smallest object as a fraction of the image")
    max_area_frac: float = Field(0.5, gt=0, le=1, description="regions larger than this are background")


class Sam2Config(BackendConfig):
    """SAM2 automatic masks (official `sam2` package); knobs and defaults of SAM2AutomaticMaskGenerator."""

    has_stability: ClassVar[bool] = True
    tracks_objects: ClassVar[bool] = True  # the official SAM2 video predictor (segment/sam2_video.py)
    cli_flags: ClassVar[Mapping[str, str]] = {
        "checkpoint": "--sam2-checkpoint",
        "config": "--sam2-config",
        "points_per_side": "--sam2-points-per-side",
        "points_per_batch": "--sam2-points-per-batch",
        "pred_iou_thresh": "--sam2-pred-iou-thresh",
        "stability_score_thresh": "--sam2-stability-score-thresh",
        "box_nms_thresh": "--sam2-box-nms-thresh",
        "min_mask_region_area": "--sam2-min-mask-region-area",
        "crop_n_layers": "--sam2-crop-n-layers",
    }

    name: Literal["sam2"] = "sam2"
    checkpoint: Path | None = Field(None, description="local SAM2 checkpoint (.pt); nothing is downloaded")
    config: str = Field("sam2.1_hiera_s", description="config name (sam2.1_hiera_t|s|b+|l) or a YAML path")
    points_per_side: int = Field(
        32, ge=1, description="point prompts per image side (points_per_side² per crop)"
    )
    points_per_batch: int = Field(64, ge=1, description="point prompts decoded together")
    pred_iou_thresh: float = Field(0.8, ge=0, le=1, description="keep masks whose predicted IoU exceeds this")
    stability_score_thresh: float = Field(
        0.95, ge=0, le=1, description="keep masks whose stability score is at least this"
    )
    stability_score_offset: float = Field(
        1.0, ge=0, description="logit shift of the two thresholds the stability score compares"
    )
    mask_threshold: float = Field(0.0, description="logit above which a pixel is in the mask")
    box_nms_thresh: float = Field(
        0.7, ge=0, le=1, description="box IoU above which NMS drops a duplicate mask"
    )
    crop_n_layers: int = Field(0, ge=0, description="layers of image crops run again (layer i: (2^i)² crops)")
    crop_nms_thresh: float = Field(0.7, ge=0, le=1, description="box NMS threshold between crops")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="overlap of first-layer crops")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="points_per_side divisor per crop layer")
    min_mask_region_area: int = Field(
        0,
        ge=0,
        description="fill holes and drop islands up to this area, in pixels of the low-resolution "
        "(image_size / 4) mask logits, as the official generator does; 0 disables",
    )
    multimask_output: bool = Field(True, description="3 masks per point prompt (False: 1)")
    mixed_precision: bool = Field(True, description="bf16 autocast; only on CUDA, float32 on the CPU")


Sam3Tracking = Literal["video_model", "association"]


class Sam3Config(BackendConfig):
    """SAM 3 (official `sam3` package): every instance of each named class, one text prompt per class;
    thresholds named and defaulted as the official image predictor's (`Sam3Processor`)."""

    has_stability: ClassVar[bool] = False
    cli_flags: ClassVar[Mapping[str, str]] = {
        "checkpoint": "--sam3-checkpoint",
        "classes": "--classes",
        "bpe_path": "--sam3-bpe-path",
        "arch": "--sam3-arch",
        "confidence_threshold": "--sam3-confidence-threshold",
        "det_nms_thresh": "--sam3-det-nms-thresh",
        "batch_size": "--sam3-batch-size",
        "track_with": "--sam3-track-with",
        "new_det_thresh": "--sam3-new-det-thresh",
    }

    name: Literal["sam3"] = "sam3"
    checkpoint: Path | None = Field(None, description="local SAM 3 checkpoint (sam3.pt); never downloaded")
    classes: tuple[str, ...] | None = Field(
        None,
        validate_default=True,
        description='the classes to find, comma-separated ("person,forklift"); their order is the order of '
        "the COCO categories",
    )
    bpe_path: Path | None = Field(
        None, description="CLIP's bpe_simple_vocab_16e6.txt.gz; default: the copy open_clip_torch ships"
    )
    arch: str = Field("sam3", description='"sam3" (the released image model) or a Sam3Arch .json file')
    confidence_threshold: float = Field(
        0.5, ge=0, lt=1, description="keep detections whose score (class x presence probability) exceeds this"
    )
    det_nms_thresh: float = Field(
        0.0,
        ge=0,
        le=1,
        description="per-class mask NMS: drop a detection overlapping a better one by more than this IoU "
        "(0: off, as the official image predictor; its video model uses 0.1)",
    )
    batch_size: int = Field(4, ge=1, description="images per image-encoder pass (each with every class)")
    mixed_precision: bool = Field(True, description="bf16 autocast; only on CUDA, float32 on the CPU")
    track_with: Sam3Tracking | None = Field(
        None,
        description="--track: 'video_model' (the official SAM 3 video model; CUDA only) or 'association' "
        "(per-frame detections linked by mask IoU and depth); default: video_model with --gpu, else "
        "association (a run records the choice)",
    )
    new_det_thresh: float = Field(
        0.7,
        ge=0,
        lt=1,
        description="--track with the video model: an unmatched detection starts a new object above this "
        "score (the release's value); detections enter matching above --sam3-confidence-threshold",
    )

    def tracks_itself(self) -> bool:
        return self.track_with == "video_model"

    def key_dump(self) -> dict[str, Any]:
        # The video model's settings shape only its runs: other sam3 runs keep the key they had before
        # it existed (the association follows objects after labelling, outside the key).
        out = self.model_dump(mode="json")
        if self.track_with != "video_model":
            del out["track_with"], out["new_det_thresh"]
        return out

    @field_validator("classes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if v is None:
            raise ValueError('sam3 needs the classes to find: --classes "person,forklift"')
        names = [n.strip() for n in v.split(",")] if isinstance(v, str) else v
        if isinstance(names, list | tuple):
            if not names or any(not isinstance(n, str) or not n.strip() for n in names):
                raise ValueError(f"class names must be non-empty, comma-separated; got {v!r}")
            names = [n.strip() for n in names]
            if len(set(names)) != len(names):
                raise ValueError(f"class names must differ; got {v!r}")
            return tuple(names)
        return v


MaskConfig = Annotated[ClassicalMasksConfig | Sam2Config | Sam3Config, Field(discriminator="name")]


def mask_classes(config: ClassicalMasksConfig | Sam2Config | Sam3Config) -> tuple[str, ...] | None:
    """The class list a mask backend's config names (None: a class-agnostic backend)."""
    return config.classes if isinstance(config, Sam3Config) else None
