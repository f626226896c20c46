"""`labeler predict` records: `OUT/<stem>.json` (ImagePrediction) and `OUT/predictions.json` (PredictionSet).

Beside them, per image: `<stem>_depth.npy` (float32 metres), `<stem>_ids.png` (uint16, 0 = none; an
object's pixels are `ids == PredictedObject.id`) and `<stem>_overlay.png`.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from data_schema.heads import HeadsTask
from data_schema.record import Record

PREDICTIONS_SCHEMA_VERSION: Final = 1


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


class StereoComparison(Record):
    """Predicted depth against the SGBM depth of the rectified pair, over pixels with valid stereo depth."""

    abs_rel: float
    delta1: float
    median_ratio: float = Field(description="median of predicted / stereo depth (1 = same scale)")
    stereo_valid_fraction: float = Field(ge=0, le=1)


class ImagePrediction(Record):
    """`OUT/<stem>.json`: one input image's prediction."""

    schema_version: Literal[1] = PREDICTIONS_SCHEMA_VERSION
    image: str = Field(description="input file")
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


class PredictFailure(Record):
    """An input image `labeler predict` could not use, with the one-line reason."""

    image: str
    error: str


class PredictionSet(Record):
    """`OUT/predictions.json`: every image of one `labeler predict` call."""

    schema_version: Literal[1] = PREDICTIONS_SCHEMA_VERSION
    run: str
    images: list[ImagePrediction]
    failures: list[PredictFailure] = Field(default_factory=list, description="images that could not be used")
