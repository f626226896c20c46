"""Validated configurations of the CLI commands: the CLI parses flags into one of these, then calls one
function. Frozen pydantic models, so a bad flag fails before any work starts, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from data_schema._base import Record
from data_schema.backends import ClassicalMasksConfig, MaskConfig, SgbmConfig, StereoConfig
from data_schema.calibration import BoardSpec

Layout = Literal["auto", "side-by-side", "pairs", "suffix", "video"]


class CalibrateConfig(Record):
    captures: Path
    rig: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    board: BoardSpec
    layout: Layout = "auto"
    stride: int = Field(10, ge=1, description="video: use every Nth frame")
    alpha: float = Field(0.0, ge=-1, le=1)
    out: Path | None = Field(None, description="default calib/<rig>.yaml")
    export: tuple[Literal["ros"], ...] = ()

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
    z_far_m: float = Field(20.0, gt=0, description="depth beyond this is invalid")
    samples_per_shard: int = Field(32, ge=1)
    gpus: tuple[int, ...] = Field((), description="CUDA device ids; one worker per GPU")
    workers: int | None = Field(None, ge=1, description="CPU workers (default: cores)")
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler")
    retry_failed: bool = False
    previews: bool = True
    progress: bool = True
