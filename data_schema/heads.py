"""DINOv2 heads records: what a checkpoint stores to rebuild its model, and what a run folder reports.

A heads checkpoint (`RUN/checkpoints/*.pt`, format `labeler-heads/1`) holds `model_config`
(HeadsModelConfig) and `instances` (InstanceParams) as plain dicts beside the weights, so a run can be
rebuilt without its command line. `RUN/metrics.csv|json` have one EpochMetrics per epoch;
`RUN/finetune/comparison.json` is a FinetuneComparison.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, model_validator

from data_schema.record import Record

HEADS_SCHEMA_VERSION: Final = 1

Backbone = Literal["vits", "vitb", "vitl", "vitg", "tiny"]
HeadsTask = Literal["depth", "seg", "fusion"]


class HeadsModelConfig(Record):
    """What rebuilds a heads model from its checkpoint: backbone size, task, output bound, input size."""

    backbone: Backbone = Field("vits", description="DINOv2 size; tiny = random-init test model")
    task: HeadsTask = Field("fusion", description="depth | seg | fusion (both, with a joint head)")
    max_depth_m: float = Field(20.0, gt=0, description="metric depth output is sigmoid * this")
    input_size: int = Field(518, ge=14, description="short image side fed to the ViT, multiple of 14")
    classes: tuple[str, ...] | None = Field(
        None,
        description="the dataset's classes (sam3 --classes): seg / fusion heads also learn a class map "
        "(0 = no object, then these in order); None: class-agnostic",
    )

    @model_validator(mode="after")
    def _patch_multiple(self) -> HeadsModelConfig:
        if self.input_size % 14:
            raise ValueError(f"input_size {self.input_size} is not a multiple of the patch size 14")
        return self


class InstanceParams(Record):
    """Objectness/boundary maps (+ predicted depth) -> instances; see labeler/train/heads/instances.py."""

    objectness: float = Field(0.5, gt=0, lt=1, description="foreground probability threshold")
    boundary: float = Field(0.5, gt=0, lt=1, description="boundary probability threshold")
    depth_jump: float = Field(0.08, ge=0, description="relative depth step that cuts objects; 0 = off")
    min_area_frac: float = Field(1e-3, ge=0, lt=1, description="smallest object, fraction of the image")


class HeldoutFigures(Record):
    """Held-out metrics of one evaluation; None where the run has no held-out split or no such head.
    NaN where a figure is undefined (e.g. mask AP50 with no pseudo-mask objects)."""

    heldout_loss: float | None = Field(None, description="joint loss over the held-out split")
    abs_rel: float | None = Field(None, description="mean |pred - stereo| / stereo over valid depth pixels")
    delta1: float | None = Field(
        None, description="share of valid pixels with max(pred/stereo, stereo/pred) < 1.25"
    )
    fg_iou: float | None = Field(None, description="foreground IoU against the pseudo-masks")
    mask_miou: float | None = Field(None, description="mean over pseudo-mask objects of the best IoU")
    mask_ap50: float | None = Field(None, description="COCO 101-point AP at IoU 0.5")

    def change_from(self, before: HeldoutFigures) -> HeldoutFigures:
        """self - before, figure by figure; None where either side has none."""
        return HeldoutFigures(
            **{
                k: None if (a := getattr(self, k)) is None or (b := getattr(before, k)) is None else a - b
                for k in HeldoutFigures.model_fields
            }
        )


class TrainFigures(Record):
    """Training figures of one epoch (means over its optimiser steps, over every rank)."""

    epoch: int = Field(ge=1)
    train_loss: float
    lr: float = Field(description="learning rate of the first parameter group at the epoch's end")
    seconds: float = Field(description="wall time of the epoch's training steps")
    train_samples_per_s: float
    train_depth: float | None = Field(None, description="depth loss term; None without a depth head")
    train_seg: float | None = Field(None, description="segmentation loss term; None without a seg head")


# Pydantic collects base fields from the last base first: TrainFigures' fields come before the held-out ones,
# the column order of metrics.json that runs have always had.
class EpochMetrics(HeldoutFigures, TrainFigures):
    """One row of `RUN/metrics.csv` / `metrics.json`: an epoch's training and held-out figures."""

    @property
    def heldout(self) -> HeldoutFigures:
        return HeldoutFigures(**{k: getattr(self, k) for k in HeldoutFigures.model_fields})

    def figures(self) -> dict[str, float]:
        """Every figure the epoch has (not None), epoch number left out, in column order."""
        return {k: v for k, v in self.model_dump().items() if k != "epoch" and v is not None}


class FinetuneComparison(Record):
    """`FINETUNE_RUN/comparison.json`: held-out figures of the frozen run's best epoch (the checkpoint
    finetuning starts from), those after finetuning, and the change. When a review has rejected held-out
    samples since the frozen run, its best epoch is scored again on the samples left (RUN/initial.json)."""

    schema_version: Literal[1] = HEADS_SCHEMA_VERSION
    base_run: str = Field(description="the train-heads run folder")
    base_epoch: int = Field(ge=1, description="the frozen run's best epoch")
    finetune_epochs: int = Field(ge=0)
    frozen: HeldoutFigures
    finetuned: HeldoutFigures
    change: HeldoutFigures = Field(description="finetuned - frozen")
