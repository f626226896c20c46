"""`labeler demo` truth: `OUT/truth/truth.json`, what the synthetic rig and scenes really are.

Beside it, per scene, `OUT/truth/scene_NNN.npz`: left-camera `depth_m` (float32, inf = nothing) and
`instance_ids` (int32, 0 = background; an object's pixels are `instance_ids == ObjectTruth.id`).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from data_schema.record import Record

DEMO_SCHEMA_VERSION: Final = 1


class ObjectTruth(Record):
    id: int = Field(ge=1)
    depth_m_median: float = Field(description="median camera z over the object's visible left pixels")
    area_px: int = Field(description="visible pixels in the left image")
    base_rgb: tuple[int, int, int] = Field(description="the texture's base colour")


class SceneTruth(Record):
    pair_id: str
    objects: list[ObjectTruth] = Field(description="the objects with visible pixels in the left image")


class RigTruth(Record):
    """The rig's true calibration, in OpenCV's conventions (X_r = R·X_l + T)."""

    K_left: list[list[float]]
    dist_left: list[float]
    K_right: list[list[float]]
    dist_right: list[float]
    R: list[list[float]]
    T: list[float] = Field(description="metres")
    baseline_m: float
    image_size: list[int] = Field(description="[width, height] of one eye, px")


class DemoTruth(Record):
    """`OUT/truth/truth.json`: the rig and, per scene, its objects."""

    schema_version: Literal[1] = DEMO_SCHEMA_VERSION
    rig: RigTruth
    scenes: list[SceneTruth]


class FrameObjectTruth(Record):
    id: int = Field(ge=1, description="the object's true identity, the same in every frame")
    depth_m_median: float = Field(description="median camera z over its visible left pixels")
    area_px: int = Field(ge=1, description="visible pixels in the left image")


class FrameTruth(Record):
    frame: int = Field(ge=0)
    timestamp_s: float
    still: bool = Field(description="nothing moved since the previous frame (only the sensor noise differs)")
    objects: list[FrameObjectTruth]


class SequenceTruth(Record):
    """`OUT/truth/sequence.json`: the demo's moving sequence (`OUT/sequence/<name>.avi`, side by side) and,
    per frame, its objects with their true ids; `OUT/truth/sequence/frame_NNNNNN.npz` holds each frame's
    left-camera `depth_m` and `instance_ids` (raw, unrectified camera: remap them to compare)."""

    schema_version: Literal[1] = DEMO_SCHEMA_VERSION
    video: str = Field(description="path of the video, relative to OUT")
    fps: float = Field(gt=0)
    frames: list[FrameTruth]
