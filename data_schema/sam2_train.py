"""`labeler train-sam2` records: the run's config, its per-epoch metrics and its summary.

A run folder (`OUT/`) holds `config.json` (`{"command", "config": TrainSam2Config, ...}`), `metrics.csv|json`
(one Sam2EpochMetrics per epoch), `initial.json` (Sam2HeldoutFigures of the parent checkpoint, before any
step), `summary.json` (Sam2RunSummary) and the retrained model as `sam2.pt` (`{"model": state_dict}`, the
layout of a SAM2 release, so the official `build_sam2` and `--masks sam2 --sam2-checkpoint` load it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field

from data_schema.record import Record
from data_schema.train import TrainRunConfig

SAM2_TRAIN_SCHEMA_VERSION: Final = 1


class TrainSam2Config(TrainRunConfig):
    """`labeler train-sam2`: retrain SAM2's prompt encoder and mask decoder on a dataset's masks."""

    sam2_checkpoint: Path = Field(description="parent SAM2 checkpoint ({'model': state_dict}, as released)")
    sam2_config: str = Field(
        "sam2.1_hiera_s", description="config name (sam2.1_hiera_t|s|b+|l) or a YAML path"
    )
    batch_size: int = Field(4, ge=1, description="images per optimiser step, per process")
    objects_per_image: int = Field(
        3, ge=1, description="objects drawn per training image (the official max_num_objects)"
    )
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate of the prompt encoder and mask decoder")
    train_encoder: bool = Field(False, description="train the image encoder too (no embedding cache then)")
    encoder_lr_factor: float = Field(
        0.6, gt=0, description="image encoder's learning rate as a factor of lr (official 3e-6 / 5e-6)"
    )
    layer_decay: float = Field(
        0.9, gt=0, le=1, description="layer-wise decay of the encoder's rates: block i of n gets decay^(n-i)"
    )
    corrections: int = Field(
        7, ge=0, description="corrective clicks per step, each sampled from the previous prediction's errors"
    )
    box_prob: float = Field(0.5, ge=0, le=1, description="share of steps prompted by a box (else one point)")
    gt_click_prob: float = Field(
        0.1, ge=0, le=1, description="share of corrective clicks drawn from the target mask, not its errors"
    )
    focal_weight: float = Field(20.0, ge=0, description="weight of the sigmoid focal loss")
    dice_weight: float = Field(1.0, ge=0, description="weight of the dice loss")
    iou_weight: float = Field(1.0, ge=0, description="weight of the L1 loss of the predicted IoU")
    object_score_weight: float = Field(
        1.0, ge=0, description="weight of the object-score loss (every target holds an object)"
    )
    min_score: float = Field(0.0, ge=0, le=1, description="objects with a lower mask score are no targets")
    min_area: int = Field(
        0, ge=0, description="objects smaller than this (px, stored resolution) are no targets"
    )
    include_rejected: bool = Field(False, description="keep what a review rejected (default: never a target)")
    cache_embeddings: bool = Field(
        True,
        description="keep the frozen encoder's output per image in host memory (ignored with train_encoder)",
    )
    heldout_objects: int = Field(16, ge=1, description="held-out objects scored per image, at most")
    amg_points_per_side: int = Field(
        16, ge=0, description="automatic generator's grid on held-out images (0: no recall figure)"
    )
    amg_pred_iou_thresh: float = Field(0.8, ge=0, le=1, description="automatic generator's pred_iou_thresh")
    amg_stability_thresh: float = Field(
        0.95, ge=0, le=1, description="automatic generator's stability_score_thresh"
    )
    previews: int = Field(2, ge=0, description="held-out images drawn per epoch")


class Sam2HeldoutFigures(Record):
    """Held-out figures of one evaluation against the held-out masks; None where nothing was scored."""

    point_miou: float | None = Field(
        None, description="mean IoU of the mask from one click at the mask's centre (best predicted IoU of 3)"
    )
    box_miou: float | None = Field(None, description="mean IoU of the mask from the mask's exact box")
    amg_recall: float | None = Field(
        None, description="share of held-out masks matched (one to one, IoU >= 0.5) by an automatic mask"
    )
    amg_masks_per_image: float | None = Field(None, description="automatic masks kept per held-out image")
    n_objects: int | None = Field(None, ge=0, description="held-out masks scored")

    def change_from(self, before: Sam2HeldoutFigures) -> Sam2HeldoutFigures:
        """self - before, figure by figure; None where either side has none."""
        out: dict[str, float | None] = {}
        for k in Sam2HeldoutFigures.model_fields:
            a, b = getattr(self, k), getattr(before, k)
            out[k] = None if a is None or b is None else a - b
        out["n_objects"] = self.n_objects
        return Sam2HeldoutFigures.model_validate(out)


class Sam2TrainFigures(Record):
    """Training figures of one epoch (means over its optimiser steps, over every rank)."""

    epoch: int = Field(ge=1)
    train_loss: float
    lr: float = Field(description="learning rate of the first parameter group at the epoch's end")
    seconds: float = Field(description="wall time of the epoch's training steps")
    train_samples_per_s: float = Field(description="images per second")
    train_focal: float | None = Field(None, description="focal term, summed over the prompt steps")
    train_dice: float | None = Field(None, description="dice term, summed over the prompt steps")
    train_iou: float | None = Field(None, description="IoU-prediction L1 term, summed over the prompt steps")
    train_object_score: float | None = Field(None, description="object-score term")


class Sam2EpochMetrics(Sam2HeldoutFigures, Sam2TrainFigures):
    """One row of `OUT/metrics.csv` / `metrics.json`: an epoch's training and held-out figures."""

    @property
    def heldout(self) -> Sam2HeldoutFigures:
        return Sam2HeldoutFigures(**{k: getattr(self, k) for k in Sam2HeldoutFigures.model_fields})


class Sam2RunSummary(Record):
    """`OUT/summary.json`: where the retrained SAM2 came from and what it changed on held-out masks."""

    schema_version: Literal[1] = SAM2_TRAIN_SCHEMA_VERSION
    parent_checkpoint: str = Field(description="--sam2-checkpoint")
    parent_sha256: str = Field(description="sha256 of the parent checkpoint file")
    sam2_config: str = Field(description="--sam2-config (pass the same with the new checkpoint)")
    dataset: str
    dataset_version: str
    mask_backend: str = Field(description="the mask backend the dataset was labelled with")
    n_train_objects: int = Field(ge=0, description="target objects in the training images")
    checkpoint: str = Field(description="OUT/sam2.pt")
    checkpoint_sha256: str
    best_epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    before: Sam2HeldoutFigures = Field(description="the parent checkpoint on the held-out split")
    after: Sam2HeldoutFigures = Field(description="the best epoch on the held-out split")
    change: Sam2HeldoutFigures = Field(description="after - before")
