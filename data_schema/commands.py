"""Validated configurations of the CLI commands: the CLI parses flags into one of these, then calls one
function. Frozen pydantic models, so a bad flag fails before any work starts, naming the field."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from data_schema.backends import ClassicalMasksConfig, MaskConfig, SgbmConfig, StereoConfig
from data_schema.calibration import BoardSpec
from data_schema.heads import HeadsModelConfig, InstanceParams
from data_schema.licences import StrictLicence
from data_schema.manifest import ObjectPolicy, TrackingConfig
from data_schema.record import Record
from data_schema.train import TrainOptions, TrainRunConfig

Layout = Literal["auto", "side-by-side", "pairs", "suffix", "video"]

SCHEDULER_KINDS = ("sync", "threads", "processes")


def scheduler_problem(scheduler: str) -> str | None:
    """What is wrong with a `--scheduler` value (None: a kind, or tcp://HOST:PORT / tls://HOST:PORT)."""
    if scheduler in SCHEDULER_KINDS:
        return None
    protocol, sep, rest = scheduler.partition("://")
    if not sep or protocol not in ("tcp", "tls"):
        return (
            f"{scheduler!r} is not sync, threads, processes or a Dask scheduler's address "
            "tcp://HOST:PORT (or tls://HOST:PORT)"
        )
    host, colon, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or any(c in host for c in "/ ?#@") or not port.isdigit():
        return f"{scheduler!r}: expected {protocol}://HOST:PORT with a numeric PORT"
    if not 1 <= int(port) <= 65535:
        return f"{scheduler!r}: port {port} is not in 1..65535"
    return None


def _scheduler(value: str | None) -> str | None:
    problem = None if value is None else scheduler_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Scheduler = Annotated[str | None, AfterValidator(_scheduler)]
# Named so the CLI shows these choices from the same literal the field validates.
DepthLoss = Literal["silog", "l1"]
SegLoss = Literal["bce", "focal"]
PredictLayout = Literal["auto", "mono", "side-by-side", "pairs"]
CheckpointName = Literal["last", "best"]


class CalibExport(StrEnum):
    """What `calibrate --export` also writes (typer takes a list of enum values, not of literals)."""

    ros = "ros"


class CalibrateConfig(Record):
    captures: Path
    rig: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    board: BoardSpec
    layout: Layout = "auto"
    stride: int = Field(10, ge=1, description="video: use every Nth frame")
    alpha: float = Field(0.0, ge=-1, le=1)
    out: Path | None = Field(None, description="default calib/<rig>.yaml")
    export: tuple[CalibExport, ...] = ()

    @property
    def out_path(self) -> Path:
        return self.out or Path("calib") / f"{self.rig}.yaml"


class RectifyConfig(Record):
    captures: Path
    calib: Path
    out: Path
    layout: Layout = "auto"
    stride: int = Field(10, ge=1)


class DemoConfig(Record):
    out: Path
    n_boards: int = Field(14, ge=0)
    n_scenes: int = Field(4, ge=0)
    seed: int = 0
    middlebury: bool = Field(True, description="also write scikit-image's Middlebury Motorcycle pair")
    sequence_frames: int = Field(
        32, ge=0, le=2000, description="frames of the moving sequence (sequence/walk.avi); 0: none"
    )
    width: int = Field(640, ge=64)
    height: int = Field(480, ge=48)

    @model_validator(mode="after")
    def _even(self) -> DemoConfig:
        if self.width % 2:
            raise ValueError("width must be even")
        return self


class PseudoLabelConfig(Record):
    """`labeler pseudo-label` (input: a rectified folder) and `labeler run` (input: raw captures)."""

    inputs: Path = Field(description="rectified folder (pseudo-label) or raw captures (run)")
    calib: Path
    out: Path
    rectify: bool = Field(False, description="inputs are raw captures: rectify them first (labeler run)")
    layout: Layout = "auto"
    stride: int = Field(10, ge=1)
    stereo: StereoConfig = Field(default_factory=SgbmConfig)
    masks: MaskConfig = Field(default_factory=ClassicalMasksConfig)
    z_far_m: float = Field(
        20.0, gt=0, le=1e6, allow_inf_nan=False, description="depth beyond this is invalid, m (finite)"
    )
    objects: ObjectPolicy = Field(
        default_factory=ObjectPolicy, description="what a mask needs to be an object"
    )
    samples_per_shard: int = Field(32, ge=1, le=4096, description="samples per Zarr shard file")
    batch_size: int = Field(1, ge=1, description="samples per backend call (one GPU forward for several)")
    gpus: tuple[Annotated[int, Field(ge=0)], ...] = Field(
        (), description="CUDA device ids; one worker per GPU"
    )
    workers: int | None = Field(None, ge=1, le=1024, description="CPU workers (default: cores)")
    scheduler: Scheduler = Field(
        None,
        description="sync | threads | processes, or a running Dask scheduler's address (tcp://host:port)",
    )
    retry_failed: bool = False
    previews: bool = True
    progress: bool = True
    strict_licence: StrictLicence | None = Field(
        None, description="commercial: refuse to label with a model not known to allow commercial use"
    )
    keep_duplicates: bool = Field(
        False, description="label every frame of a sequence, still ones too (else they are skipped)"
    )
    still_threshold_dn: float = Field(
        3.0,
        ge=0,
        le=255,
        description="a sequence's frame is still when the 99th percentile of its grey difference to the last "
        "kept frame, both shrunk to 64 px wide, is at most this many grey levels (labeler/rig/still.py)",
    )
    track: bool = Field(False, description="link each sequence's objects over its frames (track_id, tracks)")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


# ------------------------------------------------------ DINOv2 heads (train-heads, finetune, predict)

# HeadsModelConfig and InstanceParams are stored in checkpoints, so they live in data_schema/heads.py;
# imported here for TrainHeadsConfig and for callers that build them from data_schema.commands.


class TrainHeadsConfig(TrainRunConfig):
    """`labeler train-heads`: frozen DINOv2, heads trained on a pseudo-label dataset."""

    model: HeadsModelConfig = Field(default_factory=HeadsModelConfig)
    weights: Path | None = Field(None, description="DINOv2 / Depth Anything V2 / FoundationStereo checkpoint")
    random_init: bool = Field(False, description="no weights: deterministic random init (tests, demos)")
    depth_loss: DepthLoss = "silog"
    seg_loss: SegLoss = "bce"
    depth_weight: float = Field(0.5, ge=0)
    seg_weight: float = Field(0.5, ge=0)
    lr: float = Field(1e-4, gt=0, description="heads' learning rate (AdamW)")
    augment: bool = Field(True, description="flips, colour jitter, random crops")
    previews: int = Field(3, ge=0, description="held-out samples drawn per epoch")
    instances: InstanceParams = Field(default_factory=InstanceParams)


class FinetuneConfig(TrainOptions):
    """`labeler finetune RUN`: unfreeze the last N ViT blocks with layer-wise learning-rate decay; the
    dataset and the other settings are the train-heads run's."""

    run: Path
    unfreeze_last: int = Field(4, ge=1, description="ViT blocks to train, counted from the last")
    lr: float = Field(1e-5, gt=0, description="learning rate of the last block")
    layer_decay: float = Field(0.8, gt=0, le=1, description="lr factor per block further from the output")
    head_lr: float | None = Field(None, gt=0, description="heads' learning rate (default 10 x --lr)")
    epochs: int = Field(5, ge=1)
    out: Path | None = Field(None, description="default RUN/finetune")
    batch_size: int | None = Field(None, ge=1, description="default: the run's")
    workers: int | None = Field(None, ge=0)

    @property
    def out_dir(self) -> Path:
        return self.out or self.run / "finetune"


class PredictConfig(Record):
    """`labeler predict`: images (or rectified pairs) -> depth, objects with metric depth, overlays, JSON."""

    inputs: Path
    run: Path
    out: Path
    layout: PredictLayout = "auto"
    calib: Path | None = Field(None, description="rectified stereo input: also compare with SGBM depth")
    gpu: int | None = None
    checkpoint: CheckpointName = "best"
    instances: InstanceParams | None = Field(None, description="default: the run's")
    stride: int = Field(1, ge=1, description="a video: predict every stride-th frame")
    keep_duplicates: bool = Field(
        False, description="a sequence: predict its still frames too (else skipped as duplicates)"
    )
    still_threshold_dn: float = Field(
        3.0, ge=0, le=255, description="a sequence: `labeler run`'s still-frame test (labeler/rig/still.py)"
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="a sequence: how objects are linked over its frames"
    )
