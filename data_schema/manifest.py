"""The dataset manifest (`DATASET/manifest.json`) and the Zarr v3 store layout it describes.

Store layout (`DATASET/data.zarr`, a Zarr v3 group; one row per sample, in `SampleRecord.index` order):

| array          | shape          | dtype   | invalid      |
|----------------|----------------|---------|--------------|
| `left`         | (N, H, W, 3)   | uint8   | -            |
| `right`        | (N, H, W, 3)   | uint8   | -            |
| `disparity_px` | (N, H, W)      | float32 | NaN          |
| `depth_m`      | (N, H, W)      | float32 | NaN          |
| `confidence`   | (N, H, W)      | float32 | NaN          |
| `instance_ids` | (N, H, W)      | uint16  | 0 = no object|

Every array has `chunk_shape` (1, H, W[, 3]), so one sample reads without touching another, and
`shard_shape` (S, H, W[, 3]): S consecutive samples share one file, so a 100k-sample set stays at a few
thousand files. Each shard has exactly one writer (zarr-python #3682: concurrent writers into one shard
lose data silently). Rows of failed samples keep the fill value and are never read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from data_schema._base import Record
from data_schema.backends import MaskConfig, StereoConfig
from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedPair

MANIFEST_SCHEMA_VERSION = 1

ARRAY_NAMES = ("left", "right", "disparity_px", "depth_m", "confidence", "instance_ids")


class CocoRle(Record):
    """COCO run-length encoding (pycocotools compressed `counts` string; column-major)."""

    size: Annotated[list[int], Field(min_length=2, max_length=2, description="[height, width]")]
    counts: str


class ObjectRecord(Record):
    """One object (instance) of a sample: its pixels are `instance_ids == id`."""

    id: int = Field(ge=1)
    area_px: int = Field(ge=1)
    bbox: Annotated[list[int], Field(min_length=4, max_length=4, description="[x, y, width, height], px")]
    score: float = Field(ge=0, le=1, description="the mask backend's quality estimate")
    stability: float | None = Field(None, description="SAM stability score; None for backends without one")
    valid_fraction: float = Field(ge=0, le=1, description="share of the object's pixels with valid depth")
    depth_m_median: float | None = Field(None, description="None when no pixel has valid depth")
    depth_m_p10: float | None = None
    depth_m_p90: float | None = None
    rle: CocoRle | None = Field(None, description="the object's pixels, for COCO export")


class SourceFiles(Record):
    left_path: str
    right_path: str
    left_sha256: str
    right_sha256: str


class ArrayDigests(Record):
    """sha256 of each array's row bytes (C order) as written; `labeler validate` recomputes them."""

    left: str
    right: str
    disparity_px: str
    depth_m: str
    confidence: str
    instance_ids: str


class SampleStats(Record):
    valid_depth_fraction: float = Field(ge=0, le=1)
    confidence_mean: float | None = Field(None, description="mean over valid pixels")
    depth_m_min: float | None = None
    depth_m_max: float | None = None
    n_objects: int = Field(ge=0)


class SampleRecord(Record):
    sample_id: str
    status: Literal["ok", "failed"]
    error: str | None = Field(None, description="one line: stage, file, problem, fix")
    index: int | None = Field(None, ge=0, description="row in every array of data.zarr")
    source: SourceFiles | None = None
    digests: ArrayDigests | None = None
    stats: SampleStats | None = None
    objects: list[ObjectRecord] = Field(default_factory=list)
    seconds: float | None = Field(None, ge=0, description="wall time spent labelling this sample")


class ArraySpec(Record):
    name: str
    dtype: str
    shape: list[int]
    chunk_shape: list[int]
    shard_shape: list[int]
    fill_value: float | int | None
    compressor: str


class StoreLayout(Record):
    path: Literal["data.zarr"] = "data.zarr"
    samples_per_shard: int = Field(ge=1)
    arrays: list[ArraySpec]


class DepthSettings(Record):
    fx_px: float = Field(gt=0, description="rectified focal length, P1[0][0]")
    baseline_m: float = Field(gt=0, description="rectified baseline, -P2[0][3] / P2[0][0]")
    doffs_px: float = Field(description="P2 cx - P1 cx; 0 for cv2.stereoRectify(CALIB_ZERO_DISPARITY)")
    z_far_m: float = Field(gt=0, description="depth beyond this is invalid")


class Manifest(Record):
    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    dataset_version: str = Field(
        description="sha256 over configs and every sample's digests: content-derived"
    )
    labeler_version: str
    calibration: StereoCalibration
    calibration_sha256: str
    depth: DepthSettings
    stereo: StereoConfig
    masks: MaskConfig
    library_versions: dict[str, str]
    layout: StoreLayout
    samples: list[SampleRecord]

    @property
    def ok(self) -> list[SampleRecord]:
        return [s for s in self.samples if s.status == "ok"]

    @property
    def failures(self) -> list[SampleRecord]:
        return [s for s in self.samples if s.status == "failed"]


class LabelTask(Record):
    """One rectified pair to label, with its place in the store."""

    sample_id: str
    index: int = Field(ge=0)
    left_path: str
    right_path: str
    left_sha256: str | None = Field(None, description="known when rectify recorded it; else hashed on load")
    right_sha256: str | None = None


class ShardPart(Record):
    """`DATASET/parts/shard_NNNNN.json`: what one shard's single writer wrote; the resume record."""

    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    shard: int = Field(ge=0)
    run_key: str = Field(description="hash of the configs that made it; a part from other configs is stale")
    samples: list[SampleRecord]
    rectified: list[RectifiedPair] = Field(
        default_factory=list, description="`labeler run`: how this shard's raw pairs were rectified"
    )
