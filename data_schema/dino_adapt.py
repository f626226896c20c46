"""`labeler adapt-backbone` records: the run's config, its per-epoch metrics, the probe and the summary.

A run folder (`OUT/`) holds `warmup/` (the projection heads trained on the frozen parent: an engine run
folder: config.json, metrics.csv|json of DinoEpochMetrics, curves.png, checkpoints/), `adapt/` (the same
for the adaptation itself), `backbone.pth` (the adapted ViT, bare state dict in the official DINOv2
layout), `probe/before` and `probe/after` (train-heads runs of the depth head on the frozen parent and the
frozen adapted backbone) and `summary.json` (AdaptRunSummary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, model_validator

from data_schema.heads import Backbone
from data_schema.record import Record
from data_schema.train import TrainRunConfig

DINO_ADAPT_SCHEMA_VERSION: Final = 1
PATCH = 14
Export = Literal["teacher", "student"]


class AdaptBackboneConfig(TrainRunConfig):
    """`labeler adapt-backbone`: continued DINOv2 self-supervised training on a rig's own images."""

    dataset: Path = Field(
        description="pseudo-label dataset: its left images train, its held-out split probes"
    )
    backbone: Backbone = Field("vits", description="DINOv2 size of the parent (tiny: random, for tests)")
    weights: Path | None = Field(
        None, description="parent checkpoint: DINOv2 (official layout), Depth Anything V2 or FoundationStereo"
    )
    random_init: bool = Field(False, description="no parent: a seeded random ViT (tests, demos)")
    images: Path | None = Field(None, description="a folder of more images (captures) to train on")
    include_rejected: bool = Field(False, description="keep samples a review rejected")
    head_epochs: int = Field(2, ge=0, description="warm-up epochs: projection heads only, backbone frozen")
    epochs: int = Field(10, ge=1, description="adaptation epochs: heads and the adapted backbone")
    unfreeze_last: int = Field(2, ge=0, description="last ViT blocks trained in full (with the final norm)")
    lora_rank: int = Field(0, ge=0, description="LoRA rank on the other blocks' linear layers (0: none)")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA scale numerator; None: the rank")
    batch_size: int = Field(8, ge=2, description="images per step, per process (KoLeo needs 2)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the projection heads")
    backbone_lr: float = Field(1e-5, gt=0, description="learning rate of the deepest unfrozen block")
    lora_lr: float = Field(1e-4, gt=0, description="learning rate of the LoRA adapters")
    layer_decay: float = Field(0.9, gt=0, le=1, description="each earlier unfrozen block's lr x this")
    weight_decay: float = Field(0.04, ge=0)
    warmup_frac: float = Field(0.1, ge=0, lt=1, description="linear lr warm-up share of each phase")
    clip_grad: float = Field(3.0, gt=0, description="largest gradient norm")
    global_size: int = Field(224, ge=28, description="global crop side, px (multiple of 14)")
    local_size: int = Field(98, ge=14, description="local crop side, px (multiple of 14)")
    local_crops: int = Field(8, ge=0, description="local crops per image")
    global_scale: tuple[float, float] = Field((0.32, 1.0), description="global crops' share of the area")
    local_scale: tuple[float, float] = Field((0.05, 0.32), description="local crops' share of the area")
    mask_probability: float = Field(0.5, ge=0, le=1, description="share of global crops masked for iBOT")
    mask_ratio: tuple[float, float] = Field((0.1, 0.5), description="masked share of a masked crop's patches")
    prototypes: int = Field(65536, ge=2, description="prototypes of the DINO/iBOT head (shared)")
    head_hidden: int = Field(2048, ge=1, description="hidden width of the projection head")
    head_bottleneck: int = Field(256, ge=1, description="bottleneck width before the prototypes")
    dino_weight: float = Field(1.0, ge=0, description="weight of the class-token DINO loss")
    ibot_weight: float = Field(1.0, ge=0, description="weight of the masked-patch iBOT loss")
    koleo_weight: float = Field(0.1, ge=0, description="weight of the KoLeo regulariser")
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0, description="teacher temperature after its warm-up")
    warmup_teacher_temp: float = Field(0.04, gt=0, description="teacher temperature at the first step")
    teacher_temp_warmup_frac: float = Field(0.3, ge=0, le=1, description="share of all steps to warm it up")
    momentum: float = Field(
        0.992, ge=0, le=1, description="teacher EMA momentum at the first step (cosine to 1)"
    )
    sinkhorn_iterations: int = Field(3, ge=1)
    export: Export = Field(
        "teacher", description="which backbone backbone.pth holds: the EMA teacher (as DINOv2) or the student"
    )
    probe_epochs: int = Field(10, ge=0, description="epochs of each depth-head probe (0: no probe)")
    probe_input_size: int = Field(518, ge=14, description="short side fed to the ViT in the probe")
    probe_lr: float = Field(1e-3, gt=0)
    probe_batch_size: int = Field(4, ge=1)
    probe_max_depth_m: float = Field(20.0, gt=0, description="the probe's depth output bound, m")
    heldout_frac: float = Field(
        0.2, ge=0, lt=1, description="share of sample ids held out (never adapted on)"
    )
    resume: bool = Field(False, description="continue the run in --out")

    @model_validator(mode="after")
    def _check(self) -> AdaptBackboneConfig:
        for name in ("global_size", "local_size", "probe_input_size"):
            if getattr(self, name) % PATCH:
                raise ValueError(f"{name} {getattr(self, name)} is not a multiple of the patch size {PATCH}")
        for name in ("global_scale", "local_scale", "mask_ratio"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"{name} ({lo}, {hi}): expected 0 <= low <= high <= 1")
        if self.unfreeze_last == 0 and self.lora_rank == 0:
            raise ValueError("nothing adapts: pass --unfreeze-last N and/or --lora-rank R")
        return self


class DinoHeldoutFigures(Record):
    """The objective on the held-out images (one fixed set of views), teacher at its final temperature."""

    heldout_loss: float | None = Field(None, description="weighted total, as in training")
    heldout_dino: float | None = None
    heldout_ibot: float | None = None
    heldout_koleo: float | None = None
    feature_spread: float | None = Field(
        None,
        description="std over images of the L2-normalised teacher class tokens, x sqrt(width): "
        "0 = collapsed to one point, about 1 = spread over the sphere",
    )


class DinoEpochMetrics(DinoHeldoutFigures):
    """One row of `metrics.csv` / `metrics.json` of `OUT/warmup` and `OUT/adapt`."""

    epoch: int = Field(ge=1)
    train_loss: float
    train_dino: float | None = None
    train_ibot: float | None = None
    train_koleo: float | None = None
    lr: float = Field(description="learning rate of the first parameter group (the heads) at the epoch's end")
    seconds: float
    train_samples_per_s: float = Field(description="images (each with all its crops) per second")
    teacher_temp: float | None = Field(None, description="teacher temperature at the epoch's end")
    momentum: float | None = Field(None, description="teacher EMA momentum at the epoch's end")


class ProbeFigures(Record):
    """Held-out depth figures of a depth head trained on a frozen backbone for a fixed budget."""

    run: str = Field(description="the train-heads run folder")
    weights: str = Field(description="the backbone checkpoint probed")
    epochs: int
    abs_rel: float | None = Field(None, description="held-out AbsRel at the last epoch")
    delta1: float | None = Field(None, description="held-out δ1 at the last epoch")
    heldout_loss: float | None = None


class AdaptRunSummary(Record):
    """`OUT/summary.json`: where the adapted backbone came from and what the probe says it changed."""

    schema_version: Literal[1] = DINO_ADAPT_SCHEMA_VERSION
    parent_weights: str = Field(description="--weights, or OUT/parent.pth written for --random-init")
    parent_sha256: str
    dataset: str
    dataset_version: str
    n_train_images: int = Field(
        description="images the objective trained on (dataset train split + --images)"
    )
    n_heldout: int
    weights: str = Field(description="OUT/backbone.pth")
    weights_sha256: str
    export: Export
    steps: int = Field(description="optimiser steps of warm-up + adaptation")
    probe_before: ProbeFigures | None = None
    probe_after: ProbeFigures | None = None
    abs_rel_change: float | None = Field(None, description="after - before (negative: adapting helped)")
