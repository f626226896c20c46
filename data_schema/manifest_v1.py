"""Layout v1 of a dataset (labeler 0.1): one `manifest.json` listing every sample with its objects.

Kept only so `labeler migrate` can read v1 datasets and convert them to v2 (data_schema/manifest.py);
nothing writes this layout any more. The Zarr store layout is the same in both versions.

"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedPair
from data_schema.manifest import ArrayDigests, CocoRle, DepthSettings, SampleStats, SourceFiles, StoreLayout
from data_schema.record import Record

MANIFEST_V1_SCHEMA_VERSION: Final = 1


class ObjectRecordV1(Record):
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


class SampleRecordV1(Record):
    sample_id: str
    status: Literal["ok", "failed"]
    error: str | None = Field(None, description="one line: stage, file, problem, fix")
    index: int | None = Field(None, ge=0, description="row in every array of data.zarr")
    source: SourceFiles | None = None
    digests: ArrayDigests | None = None
    stats: SampleStats | None = None
    objects: list[ObjectRecordV1] = Field(default_factory=list)
    seconds: float | None = Field(None, ge=0, description="wall time spent labelling this sample")


class ManifestV1(Record):
    schema_version: Literal[1] = MANIFEST_V1_SCHEMA_VERSION
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
    samples: list[SampleRecordV1]

    @property
    def ok(self) -> list[SampleRecordV1]:
        return [s for s in self.samples if s.status == "ok"]

    @property
    def failures(self) -> list[SampleRecordV1]:
        return [s for s in self.samples if s.status == "failed"]


class ShardPartV1(Record):
    """`DATASET/parts/shard_NNNNN.json`: what one shard's single writer wrote; the resume record."""

    schema_version: Literal[1] = MANIFEST_V1_SCHEMA_VERSION
    shard: int = Field(ge=0)
    run_key: str = Field(description="hash of the configs that made it; a part from other configs is stale")
    samples: list[SampleRecordV1]
    rectified: list[RectifiedPair] = Field(
        default_factory=list, description="`labeler run`: how this shard's raw pairs were rectified"
    )
