"""`labeler diff A B`: what changed between two datasets (REPORT/diff.json)."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from data_schema.record import Record

DIFF_SCHEMA_VERSION: Final = 1


class SampleChange(Record):
    """A sample in both datasets whose arrays differ (by digest)."""

    sample_id: str
    arrays: list[str] = Field(description="names of the arrays whose digests differ")
    depth_rel_change_median: float | None = Field(
        None, description="median |z_B - z_A| / z_A over pixels with valid depth in both"
    )
    depth_rel_change_p90: float | None = None
    valid_depth_fraction_change: float | None = Field(None, description="B - A")
    mask_iou_mean: float | None = Field(
        None, description="mean IoU of A's objects matched one-to-one to B's (IoU >= 0.5); None: no objects"
    )
    objects_matched: int = Field(ge=0)
    objects_appeared: int = Field(ge=0, description="objects of B matched to none of A")
    objects_vanished: int = Field(ge=0, description="objects of A matched to none of B")
    doubt_a: float | None = None
    doubt_b: float | None = None
    magnitude: float = Field(
        0.0,
        ge=0,
        description="how much changed, to sort by: median |dz|/z + |valid-depth change| + (1 - mask IoU) + "
        "share of objects appeared or vanished",
    )
    picture: str | None = Field(None, description="PNG side by side, relative to the report folder")


class SignalShift(Record):
    """One doubt signal (or term) over the samples both datasets have."""

    name: str
    mean_a: float | None
    mean_b: float | None
    shift: float | None = Field(description="mean_b - mean_a")
    n: int = Field(ge=0, description="samples with the signal in both (objects.*: with objects that have it)")


class MetricShift(Record):
    """A held-out metric of the run given for A against the run given for B (their last epochs)."""

    name: str
    a: float | None
    b: float | None
    change: float | None


class TrackMatch(Record):
    """A track of A and the track of B it was matched to, over the samples both datasets have."""

    track_a: int = Field(ge=1)
    track_b: int = Field(ge=1)
    sequence: str | None = Field(None, description="the sequence of track_a (the tracks table)")
    iou: float = Field(
        ge=0,
        le=1,
        description="mask IoU of the two tracks: the sum of their per-frame intersections over "
        "the sum of their per-frame unions",
    )
    frames_a: int = Field(ge=0, description="frames track_a is in")
    frames_b: int = Field(ge=0, description="frames track_b is in")
    frames_both: int = Field(ge=0, description="frames where the two tracks' objects match (IoU >= 0.5)")
    id_switches: int = Field(
        ge=0, description="times the B track that track_a's object matches changes from frame to frame"
    )
    depth_m_diff_median: float | None = Field(
        None, description="median over frames_both of the objects' median depth, B - A, m"
    )
    depth_m_diff_max_abs: float | None = Field(None, description="the largest |B - A| of those, m")


class TrackDiff(Record):
    """Tracks of two `--track` datasets matched by mask IoU over the samples both have."""

    tracks_a: int = Field(ge=0)
    tracks_b: int = Field(ge=0)
    matched: list[TrackMatch] = Field(description="one to one, largest IoU first, IoU >= 0.5")
    only_a: list[int] = Field(description="A's tracks matched to none of B (ids)")
    only_b: list[int] = Field(description="B's tracks matched to none of A (ids)")
    id_switches: int = Field(
        ge=0,
        description="over every track of A (A the reference): times the B track its object matches "
        "changes from frame to frame",
    )


class DatasetDiff(Record):
    """The whole report; `changed` is sorted by `magnitude`, largest first."""

    schema_version: Literal[1] = DIFF_SCHEMA_VERSION
    a: str
    b: str
    version_a: str
    version_b: str
    added: list[str] = Field(description="ok sample ids only in B")
    removed: list[str] = Field(description="ok sample ids only in A")
    n_unchanged: int = Field(ge=0)
    changed: list[SampleChange]
    doubt: list[SignalShift]
    metrics: list[MetricShift] = Field(default_factory=list, description="only when runs are given")
    objects_a: int = Field(ge=0)
    objects_b: int = Field(ge=0)
    class_counts_a: dict[str, int] | None = Field(
        None, description="objects per class of A (sam3 --classes datasets); None: class-agnostic"
    )
    class_counts_b: dict[str, int] | None = Field(None, description="objects per class of B")
    made_differently: list[str] = Field(
        default_factory=list,
        description="how the two were made differently, one line each (calibration, depth settings, stereo, "
        "masks, object policy); empty: the same way",
    )
    tracks: TrackDiff | None = Field(None, description="both datasets labelled with --track; else None")
