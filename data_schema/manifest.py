"""Dataset layout v2: a small dataset record, a shard index, Parquet tables and the Zarr v3 arrays.

```
DATASET/
  manifest.json            Manifest: how the data was made, counts, store layout (no per-sample data)
  shards.jsonl             the shard index: one ShardEntry per line, appended when a shard is written
  rows.jsonl               the row plan: one ShardPlan per line, appended before a shard is labelled
  tables/samples/*.parquet one row per sample (SampleRecord); one row group per shard
  tables/objects/*.parquet one row per object (ObjectRow); one row group per shard
  tables/tracks/*.parquet  one row per track (TrackRow; `--track` runs only), named in the manifest
  data.zarr/               the arrays below, one row per sample
  previews/, index.html, gallery/
```

Each shard's single writer task writes its arrays, previews and two small table files
(`tables/*/s-<shard>.parquet`, atomically); the client then appends its ShardEntry to `shards.jsonl`, which
is the commit point: a shard without an entry is redone. Table files of finished shards are later compacted
into larger files (one row group per shard, so a shard still reads alone); an entry names the file and row
group that hold its rows, and the latest entry of a shard wins. `manifest.json` is rewritten at the start and
end of a run only; its `shard_index_bytes` tells a reader whether the counts in it are current.

Store layout (`DATASET/data.zarr`, a Zarr v3 group; one row per sample, `SampleRecord.row`):

| array          | shape          | dtype   | invalid      |
|----------------|----------------|---------|--------------|
| `left`         | (N, H, W, 3)   | uint8   | -            |
| `right`        | (N, H, W, 3)   | uint8   | -            |
| `disparity_px` | (N, H, W)      | float32 | NaN          |
| `depth_m`      | (N, H, W)      | float32 | NaN          |
| `confidence`   | (N, H, W)      | float32 | NaN          |
| `instance_ids` | (N, H, W)      | uint16  | 0 = no object|

Every array has `chunk_shape` (1, H, W[, 3]), so one sample reads without touching another, and
`shard_shape` (S, H, W[, 3]): S consecutive samples share one file. Each shard has exactly one writer
(zarr-python #3682: concurrent writers into one shard lose data silently). Rows of failed samples keep the
fill value and are never read. Masks are not stored as RLE: `instance_ids` holds them (COCO export encodes).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedPair
from data_schema.licences import ModelLicence
from data_schema.record import Record

# 3: samples record their sequence, frame index and timestamp, and may be skipped still frames; objects
# carry a track_id; a tracks table. A v2 dataset reads as it is (its tables have those columns null).
MANIFEST_SCHEMA_VERSION: Final = 3

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
    class_name: str | None = Field(None, description="the object's class, from backends that name them")
    # Doubt signals (labeler/doubt.py): derived from the labels, so left out of the content hash.
    thickness_px: float | None = Field(
        None,
        ge=0,
        description="doubt: width of the mask's thickest part, px (2 x its largest outline distance + 1)",
    )
    edge_alignment: float | None = Field(
        None,
        ge=0,
        le=1,
        description="doubt: share of the mask's outline within 2 px of a depth edge (None: no depth there)",
    )
    mono_disagreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="doubt (`labeler doubt` with a model): share of the object's pixels whose stereo and "
        "monocular surface normals differ by more than 30 degrees",
    )


class ObjectRow(ObjectRecord):
    """A row of the `objects` table: an object with the sample it belongs to."""

    sample_id: str
    row: int = Field(ge=0, description="the sample's row in data.zarr")
    track_id: int | None = Field(
        None, ge=1, description="`--track`: the object's track over its sequence (the tracks table)"
    )


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
    n_objects_dropped: int = Field(
        0, ge=0, description="masks the object policy turned away (too small, or too little valid depth)"
    )


class ObjectPolicy(Record):
    """What a mask must have to be an object, for every mask backend (recorded in the manifest)."""

    min_area_px: int = Field(64, ge=1, description="smallest object, px (at the stored resolution)")
    min_valid_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="least share of an object's pixels with valid depth (border slivers fail)",
    )
    min_depth_px: int = Field(
        32, ge=1, description="an object's depth statistics need at least this many valid pixels, else null"
    )


class SampleRecord(Record):
    """A row of the `samples` table: one sample, ok or failed, and where its arrays are."""

    sample_id: str
    row: int = Field(ge=0, description="row in every array of data.zarr; a sample keeps it for life")
    status: Literal["ok", "failed", "skipped"] = Field(
        description="skipped: a still frame that repeats `duplicate_of` (no arrays, no model time)"
    )
    error: str | None = Field(None, description="one line: stage, file, problem, fix")
    sequence: str | None = Field(None, description="the video or timestamped folder of the frame")
    frame_index: int | None = Field(None, ge=0, description="the frame's number in its sequence")
    timestamp_s: float | None = Field(None, description="capture time, s (video: frame / fps)")
    duplicate_of: str | None = Field(
        None, description="a skipped still frame: the sample id of the last labelled frame it repeats"
    )
    source: SourceFiles | None = None
    digests: ArrayDigests | None = None
    stats: SampleStats | None = None
    seconds: float | None = Field(None, ge=0, description="wall time spent labelling this sample")
    device: str | None = Field(None, description="where the models ran (cpu, cuda:0, ...)")
    stereo_scale: float | None = Field(None, description="image scale the stereo network ran at")
    stereo_iters: int | None = Field(None, description="stereo refinement iterations")
    stereo_dtype: str | None = Field(None, description="stereo compute dtype (float32, float16, bfloat16)")
    # Doubt signals a `labeler doubt` pass adds (derived, so left out of the content hash).
    mono_disagreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="doubt: share of valid pixels whose stereo and monocular surface normals differ by more "
        "than 30 degrees (None: no monocular model was run)",
    )
    temporal_instability: float | None = Field(
        None,
        ge=0,
        description="doubt (video captures): median relative depth change of static pixels against the "
        "neighbouring frame (None: not a video frame, or too few static pixels)",
    )


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
    z_far_m: float = Field(gt=0, allow_inf_nan=False, description="depth beyond this is invalid (finite)")


class TableRef(Record):
    """Where a shard's rows of one table are: a Parquet file under tables/<table>/ and its row group."""

    file: str = Field(description="file name under tables/<table>/")
    row_group: int = Field(ge=0)
    n_rows: int = Field(ge=0)
    sha256: str = Field(
        description="sha256 of the shard's rows (canonical JSON lines), whatever file holds them"
    )
    file_sha256: str | None = Field(
        None,
        description="sha256 of the whole Parquet file as written (every row group it holds), so a changed "
        "byte is named even where the rows decode the same; a compaction or rewrite that moves the rows "
        "records the new file's; None: a reference written before this field",
    )


class ShardEntry(Record):
    """One line of `shards.jsonl`: a finished shard. The latest entry of a shard wins."""

    shard: int = Field(ge=0)
    row_start: int = Field(ge=0)
    row_stop: int = Field(ge=0, description="exclusive")
    run_key: str = Field(description="hash of the configs that made it")
    n_ok: int = Field(ge=0)
    n_failed: int = Field(ge=0)
    n_skipped: int = Field(0, ge=0, description="still frames skipped as duplicates")
    n_objects: int = Field(ge=0)
    samples: TableRef
    objects: TableRef
    content_sha256: str = Field(description="the shard's labels without provenance (timings, device)")
    array_bytes: dict[str, int] = Field(
        description="size of this shard's file of each array (0: none written, all rows failed)"
    )
    array_sha256: dict[str, str] | None = Field(
        None,
        description="sha256 of this shard's file of each array as written ('': none written), so a changed "
        "byte is named even where the rows decode the same; None: an entry written before this field",
    )
    rectified: list[RectifiedPair] = Field(
        default_factory=list, description="`labeler run`: how this shard's raw pairs were rectified"
    )


class ShardPlan(Record):
    """One line of `rows.jsonl`: the sample ids a shard's rows belong to (row = row_start + position),
    written before the shard is labelled."""

    shard: int = Field(ge=0)
    row_start: int = Field(ge=0)
    sample_ids: list[str]


class DatasetCounts(Record):
    samples: int = Field(0, ge=0)
    ok: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    skipped: int = Field(0, ge=0, description="still frames skipped as duplicates")
    objects: int = Field(0, ge=0)
    shards: int = Field(0, ge=0)
    tracks: int = Field(0, ge=0)


class TrackingConfig(Record):
    """How `--track` links a sequence's objects over its frames (recorded in the manifest)."""

    name: Literal["iou-depth"] = "iou-depth"
    min_iou: float = Field(0.3, gt=0, le=1, description="least mask IoU of an object with a live track")
    max_depth_jump_m: float = Field(
        0.5, gt=0, description="most change of an object's median depth between two labelled frames, m"
    )
    max_gap_frames: int = Field(
        15, ge=1, description="a track not seen for more frames than this ends (frames of the sequence)"
    )
    keyframe_every: int = Field(
        10,
        ge=1,
        le=10_000,
        description="--masks sam2: automatic masks every this many labelled frames of a sequence chunk; the "
        "SAM2 video predictor carries the objects over the frames between",
    )
    max_keyframe_misses: int = Field(
        2,
        ge=1,
        le=1000,
        description="--masks sam2: an object ends when this many keyframes in a row find no automatic mask "
        "matching its propagated one (it drifted, or is gone)",
    )
    min_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description="--masks sam2: a keyframe comes early when the propagated masks cover less than this "
        "share of the area the automatic masks covered at the last keyframe (0: only every keyframe_every)",
    )


class TrackRow(Record):
    """A row of the `tracks` table: one object followed over a sequence."""

    track_id: int = Field(ge=1, description="unique in the dataset")
    class_name: str | None = None
    sequence: str
    first_frame: int = Field(ge=0)
    last_frame: int = Field(ge=0)
    first_time_s: float | None = None
    last_time_s: float | None = None
    frames_seen: int = Field(ge=1, description="labelled frames the object is in")
    depth_m_first: float | None = Field(None, description="median depth at its first frame, m")
    depth_m_last: float | None = Field(None, description="median depth at its last frame, m")
    depth_m_nearest: float | None = Field(None, description="least median depth over its frames, m")
    nearest_frame: int | None = Field(None, ge=0, description="the frame of depth_m_nearest")
    nearest_time_s: float | None = None
    approach_speed_m_s: float | None = Field(
        None,
        description="(depth at first - depth at last) / time between them, m/s; > 0: coming nearer "
        "(None: seen once, or no timestamps)",
    )


class FileSeal(Record):
    """A file of the dataset's root as the manifest sealed it: its size and sha256. A `.jsonl` file is
    append-only: lines appended later (by a run that was killed before sealing) may follow, the sealed
    bytes must be unchanged."""

    bytes: int = Field(ge=0)
    sha256: str


class RunSettings(Record):
    """`DATASET/settings.json`: everything the run key covers, written once per run key, so `labeler
    repair` relabels with the settings the shards were made with (their `run_key` must hash from these),
    never with an edited copy."""

    run_key: str
    stereo: StereoConfig
    masks: MaskConfig
    classes: tuple[str, ...] | None = None
    calibration: StereoCalibration
    calibration_sha256: str
    depth: DepthSettings
    objects: ObjectPolicy
    samples_per_shard: int = Field(ge=1)


class Manifest(Record):
    """`DATASET/manifest.json`: the dataset-level record. Its size does not grow with samples or objects."""

    schema_version: Literal[2, 3] = MANIFEST_SCHEMA_VERSION
    dataset_version: str = Field(
        description="sha256 over the run key and every shard's labels (which cover the array digests)"
    )
    labeler_version: str
    calibration: StereoCalibration
    calibration_sha256: str
    depth: DepthSettings
    stereo: StereoConfig
    masks: MaskConfig
    classes: tuple[str, ...] | None = Field(
        None,
        description="the class list of a class-naming mask backend (sam3 --classes), in order; None: masks "
        "are class-agnostic",
    )
    run_key: str = Field(description="hash of the configs, calibration, depth settings and object policy")
    objects: ObjectPolicy = Field(default_factory=ObjectPolicy)
    library_versions: dict[str, str]
    layout: StoreLayout
    counts: DatasetCounts = Field(default_factory=DatasetCounts)
    shard_index_bytes: int = Field(
        0, ge=0, description="size of shards.jsonl when this was written; another size: counts are stale"
    )
    licences: list[ModelLicence] = Field(
        default_factory=list,
        description="the licence of every model that made the labels (data_schema/licences.py); empty in "
        "datasets written before it was recorded (read them from the backend configs)",
    )
    tracking: TrackingConfig | None = Field(None, description="`--track`: how objects were linked")
    tracks: TableRef | None = Field(None, description="the tracks table (`--track` runs only)")
    files: dict[str, FileSeal] = Field(
        default_factory=dict,
        description="the root of the chain of hashes: every file of the dataset's root (shard index, row "
        "plan, settings) as sealed; the shard index then guards the tables and arrays",
    )
    record_sha256: str | None = Field(
        None, description="sha256 of this record without this field (labeler/dataset/seal.py): any edit shows"
    )


class LabelTask(Record):
    """One rectified pair to label, with its place in the store."""

    sample_id: str
    row: int = Field(ge=0)
    left_path: str
    right_path: str
    left_sha256: str | None = Field(None, description="known when rectify recorded it; else hashed on load")
    right_sha256: str | None = None
    sequence: str | None = Field(None, description="the video or timestamped folder of the frame")
    frame_index: int | None = Field(None, ge=0)
    timestamp_s: float | None = None
