"""`labeler train-stereo` records: the run's config, its per-epoch metrics and its summary.

A run folder (`OUT/`) holds `config.json` (`{"command", "config": TrainStereoConfig, ...}`),
`metrics.csv|json` (one StereoEpochMetrics per epoch), `initial.json` (StereoHeldoutFigures of the parent
checkpoint, before any step), `summary.json` (StereoRunSummary) and the fine-tuned checkpoint in the
release's layout: `model_best_bp2.pth` with its `cfg.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from data_schema.record import Record
from data_schema.train import TrainRunConfig

STEREO_TRAIN_SCHEMA_VERSION: Final = 1
CROP_MULTIPLE = 32  # the network's input sides are multiples of 32


class TrainStereoConfig(TrainRunConfig):
    """`labeler train-stereo`: fine-tune FoundationStereo on a pseudo-label dataset of one rig."""

    stereo_weights: Path = Field(
        description="parent release checkpoint (model_best_bp2.pth, cfg.yaml beside)"
    )
    batch_size: int = Field(2, ge=1, description="pairs per optimiser step, per process")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the trained modules")
    feature_lr_factor: float = Field(
        1.0, gt=0, description="learning rate of the EdgeNeXt feature network, as a factor of lr"
    )
    weight_decay: float = Field(1e-5, ge=0)
    crop: tuple[int, int] = Field((320, 640), description="training crop (height, width), multiples of 32")
    train_iters: int = Field(22, ge=1, description="GRU iterations in training (each one is supervised)")
    valid_iters: int | None = Field(
        None, ge=1, description="GRU iterations of the held-out pass; None: cfg.yaml's"
    )
    max_disp: int | None = Field(
        None,
        ge=32,
        multiple_of=32,
        description="cost volume range (px at network input; the 3-D hourglass halves it 3 times at 1/4); "
        "None: cfg.yaml's",
    )
    sequence_gamma: float = Field(0.9, gt=0, le=1, description="weight decay of earlier GRU iterations")
    distill_weight: float = Field(1.0, ge=0, description="confidence-weighted L1 to the dataset's disparity")
    photometric_weight: float = Field(
        1.0, ge=0, description="SSIM + L1 of the right image warped to the left"
    )
    smooth_weight: float = Field(
        0.1, ge=0, description="edge-aware smoothness of the mean-normalised disparity"
    )
    ssim_share: float = Field(0.85, ge=0, le=1, description="SSIM's share of the photometric error (rest L1)")
    occlusion_px: float = Field(
        1.0, gt=0, description="left-right check of the photometric loss: pixels hidden by more than this"
    )
    confident: float = Field(
        0.5, ge=0, le=1, description="held-out pixels compared with the pseudo-labels: confidence >= this"
    )
    augment: bool = Field(True, description="scale, crop, swap-and-flip, asymmetric colour jitter")
    min_scale: float = Field(0.8, gt=0, description="smallest image scale drawn before the crop")
    max_scale: float = Field(1.2, gt=0, description="largest image scale drawn before the crop")
    flip_prob: float = Field(0.5, ge=0, le=1, description="share of pairs mirrored and swapped")
    jitter: float = Field(0.2, ge=0, lt=1, description="colour jitter: factors in 1 ± this, per image")
    eval_scale: float = Field(1.0, gt=0, le=1, description="held-out images resized by this for the network")
    freeze: tuple[str, ...] = Field(
        (), description="modules frozen besides the Depth Anything V2 branch (always frozen), e.g. feature"
    )
    truth: Path | None = Field(
        None, description="truth disparity: a `labeler demo` folder, or a folder of <sample_id>.npy"
    )
    allow_other_size: bool = Field(
        False, description="train although the parent was fine-tuned on images of another size"
    )
    previews: int = Field(2, ge=0, description="held-out samples drawn per epoch")
    include_rejected: bool = Field(
        False, description="also train and evaluate on samples a review rejected (their masks are not used)"
    )

    @field_validator("crop")
    @classmethod
    def _crop_multiple(cls, crop: tuple[int, int]) -> tuple[int, int]:
        h, w = crop
        if h < CROP_MULTIPLE or w < CROP_MULTIPLE or h % CROP_MULTIPLE or w % CROP_MULTIPLE:
            raise ValueError(f"crop {h}x{w}: height and width must be positive multiples of {CROP_MULTIPLE}")
        return crop

    @model_validator(mode="after")
    def _scales(self) -> TrainStereoConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"--min-scale {self.min_scale} exceeds --max-scale {self.max_scale}")
        return self


class StereoHeldoutFigures(Record):
    """Held-out figures of one evaluation, full-resolution px; None where there is no such data."""

    epe_px: float | None = Field(None, description="mean |pred - pseudo-label| over confident pixels")
    bad2_percent: float | None = Field(None, description="% of confident pixels off by more than 2 px")
    photometric: float | None = Field(
        None, description="photometric error (SSIM + L1) over the pixels seen by both views"
    )
    truth_epe_px: float | None = Field(None, description="mean |pred - truth| where truth exists")
    truth_bad2_percent: float | None = Field(None, description="% of truth pixels off by more than 2 px")

    def change_from(self, before: StereoHeldoutFigures) -> StereoHeldoutFigures:
        """self - before, figure by figure; None where either side has none."""
        return StereoHeldoutFigures(
            **{
                k: None if (a := getattr(self, k)) is None or (b := getattr(before, k)) is None else a - b
                for k in StereoHeldoutFigures.model_fields
            }
        )


class StereoTrainFigures(Record):
    """Training figures of one epoch (means over its optimiser steps, over every rank)."""

    epoch: int = Field(ge=1)
    train_loss: float
    lr: float = Field(description="learning rate of the first parameter group at the epoch's end")
    seconds: float = Field(description="wall time of the epoch's training steps")
    train_samples_per_s: float
    train_distill: float | None = Field(None, description="sequence distillation term")
    train_photometric: float | None = Field(None, description="photometric term")
    train_smooth: float | None = Field(None, description="smoothness term")


class StereoEpochMetrics(StereoHeldoutFigures, StereoTrainFigures):
    """One row of `OUT/metrics.csv` / `metrics.json`: an epoch's training and held-out figures."""

    @property
    def heldout(self) -> StereoHeldoutFigures:
        return StereoHeldoutFigures(**{k: getattr(self, k) for k in StereoHeldoutFigures.model_fields})


class StereoRunSummary(Record):
    """`OUT/summary.json`: where the fine-tuned checkpoint came from and what it changed on held-out data."""

    schema_version: Literal[1] = STEREO_TRAIN_SCHEMA_VERSION
    parent_weights: str = Field(description="--stereo-weights")
    parent_sha256: str = Field(description="sha256 of the parent checkpoint file")
    dataset: str
    dataset_version: str
    teacher: str = Field(description="the stereo backend the dataset was labelled with (its config)")
    image_size: tuple[int, int] = Field(description="(width, height) of the dataset's images")
    weights: str = Field(description="OUT/model_best_bp2.pth (cfg.yaml beside it)")
    weights_sha256: str
    best_epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    before: StereoHeldoutFigures = Field(description="the parent checkpoint on the held-out split")
    after: StereoHeldoutFigures = Field(description="the best epoch on the held-out split")
    change: StereoHeldoutFigures = Field(description="after - before")
