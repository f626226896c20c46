"""Capture and stereo-pair records: what `rectify` reads and what `pseudo-label` reads from it."""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import Field

from data_schema.record import Record

# 2: a pair records its sequence and timestamp; a rectified pair may be a skipped still frame
CAPTURES_SCHEMA_VERSION: Final = 2


class CaptureLayout(StrEnum):
    """How a stereo capture is stored on disk."""

    side_by_side = "side-by-side"  # one 2W x H frame: left half, right half (Arducam)
    pairs = "pairs"  # left/<name> and right/<name>
    suffix = "suffix"  # <name>_left.<ext> and <name>_right.<ext>
    video = "video"  # side-by-side video, frames sampled with a stride


class StereoPairSource(Record):
    """Where one raw stereo pair comes from."""

    pair_id: str = Field(min_length=1, description="unique, filename-safe id")
    layout: CaptureLayout
    left_path: str
    right_path: str | None = Field(None, description="None for side-by-side frames and video")
    frame_index: int | None = Field(
        None, ge=0, description="video frame number, or the frame's place in a timestamped folder"
    )
    sequence: str | None = Field(
        None, description="the video or timestamped folder this frame belongs to (None: a lone capture)"
    )
    timestamp_s: float | None = Field(None, description="capture time, s (video: frame / fps)")


class RectifiedPair(Record):
    """One rectified pair on disk (`OUT/left/<pair_id>.png`, `OUT/right/<pair_id>.png`)."""

    pair_id: str
    source: StereoPairSource
    status: Literal["ok", "failed", "skipped"] = Field(
        description="skipped: a still frame, nearly identical to `duplicate_of` (nothing written)"
    )
    error: str | None = None
    duplicate_of: str | None = Field(None, description="the last kept frame of the sequence it repeats")
    left_path: str | None = Field(None, description="relative to the rectified folder")
    right_path: str | None = None
    left_sha256: str | None = None
    right_sha256: str | None = None
    vertical_offset_px: float | None = Field(
        None, description="median |y_left - y_right| of matched SIFT features after rectification"
    )
    n_matches: int | None = Field(None, ge=0)


class RectifiedSet(Record):
    """`OUT/pairs.json`: every pair rectify saw, with the calibration that rectified it."""

    schema_version: Literal[1, 2] = CAPTURES_SCHEMA_VERSION
    calib_path: str
    calib_sha256: str
    rig: str
    image_size: list[int] = Field(min_length=2, max_length=2, description="[width, height]")
    pairs: list[RectifiedPair]
