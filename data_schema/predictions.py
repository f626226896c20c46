"""`labeler predict` records: `OUT/<stem>.json` (ImagePrediction) and `OUT/predictions.json` (PredictionSet).

Beside them, per image: `<stem>_depth.npy` (float32 metres), `<stem>_ids.png` (uint16, 0 = none; an
object's pixels are `ids == PredictedObject.id`) and `<stem>_overlay.png`. A video or a folder of
timestamped frames is a sequence: each frame is one ImagePrediction (`<stem>` = `<video>_f<frame>` for a
video) with its place in the sequence, its objects carry a `track_id`, and the set has a `tracks` summary.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from data_schema.heads import HeadsTask
from data_schema.manifest import TrackingConfig, TrackRow
from data_schema.record import Record

# 2: a frame of a sequence records its place in it, its objects their track, the set the tracks
PREDICTIONS_SCHEMA_VERSION: Final = 2


class PredictedObject(Record):
    """One predicted object: pixels are `ids == id` in `<stem>_ids.png`."""

    id: int = Field(ge=1)
    area_px: int = Field(ge=1)
    bbox: list[int] = Field(min_length=4, max_length=4, description="[x, y, width, height], px")
    score: float = Field(ge=0, le=1, description="mean objectness probability")
    depth_m_median: float | None = Field(
        None, description="predicted metric depth; None without a depth head"
    )
    depth_m_p10: float | None = None
    depth_m_p90: float | None = None
    stereo_depth_m_median: float | None = Field(None, description="SGBM depth over the object (with --calib)")
    class_name: str | None = Field(None, description="the class the heads' class map gives it (None: none)")
    track_id: int | None = Field(
        None, ge=1, description="a sequence's frame: its track (PredictionSet.tracks); None: a lone image"
    )


class StereoComparison(Record):
    """Predicted depth against the SGBM depth of the rectified pair, over pixels with valid stereo depth."""

    abs_rel: float
    delta1: float
    median_ratio: float = Field(description="median of predicted / stereo depth (1 = same scale)")
    stereo_valid_fraction: float = Field(ge=0, le=1)


class ImagePrediction(Record):
    """`OUT/<stem>.json`: one input image's prediction."""

    schema_version: Literal[1, 2] = PREDICTIONS_SCHEMA_VERSION
    image: str = Field(description="input file (a video: the video, `frame_index` says which frame)")
    layout: Literal["mono", "side-by-side", "pairs"]
    width: int
    height: int
    run: str
    checkpoint_epoch: int
    weights: str | None = Field(description="what the backbone was initialised from")
    task: HeadsTask
    max_depth_m: float
    depth_path: str | None
    ids_path: str
    overlay_path: str
    depth_m_median: float | None = Field(description="median predicted depth over the image")
    objects: list[PredictedObject]
    stereo: StereoComparison | None = None
    sequence: str | None = Field(None, description="the video or timestamped folder (None: a lone image)")
    frame_index: int | None = Field(None, ge=0, description="the frame's number in its sequence")
    timestamp_s: float | None = Field(None, description="capture time, s (video: frame / fps)")


class PredictFailure(Record):
    """An input image `labeler predict` could not use, with the one-line reason."""

    image: str
    error: str


class PredictSkipped(Record):
    """A still frame of a sequence `labeler predict` skipped: nearly identical to the last frame it kept."""

    image: str
    frame_index: int = Field(ge=0)
    duplicate_of_frame: int = Field(ge=0, description="the kept frame it repeats")


class PredictionSet(Record):
    """`OUT/predictions.json`: every image of one `labeler predict` call."""

    schema_version: Literal[1, 2] = PREDICTIONS_SCHEMA_VERSION
    run: str
    images: list[ImagePrediction]
    failures: list[PredictFailure] = Field(default_factory=list, description="images that could not be used")
    skipped: list[PredictSkipped] = Field(
        default_factory=list, description="still frames of a sequence, not predicted (`--keep-duplicates`)"
    )
    tracks: list[TrackRow] = Field(
        default_factory=list, description="objects followed over their sequence (ids unique over the set)"
    )
    tracking: TrackingConfig | None = Field(None, description="how tracks were linked (None: no sequence)")
