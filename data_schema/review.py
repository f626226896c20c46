"""The review loop's records: decisions (`DATASET/reviews.jsonl`) and the doubt pass (`DATASET/doubt.json`).

`reviews.jsonl` is an append-only log, one `Review` per line, each line fsynced before `labeler review`
answers: a decision is saved the moment it is made and a crash loses at most a line cut short, which the
next append drops. The latest line of a (sample, object) wins; `clear` withdraws a decision. A decision
names the labels it was made on (`labels_sha256`): once the sample is relabelled it is stale, shown but
no longer applied.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field

from data_schema.record import Record

REVIEWS_SCHEMA_VERSION: Final = 1
DOUBT_PASS_SCHEMA_VERSION: Final = 1

Decision = Literal["accept", "reject", "flag", "clear"]


class Review(Record):
    """One decision on a sample, or on one object of it."""

    sample_id: str
    object_id: int | None = Field(
        None, ge=1, description="the object's id in instance_ids; None: the decision is on the whole sample"
    )
    decision: Decision = Field(description="accept | reject | flag (look again) | clear (withdraw)")
    note: str = Field("", max_length=2000)
    time: datetime = Field(description="when it was made, UTC")
    user: str
    labels_sha256: str = Field(
        description="sha256 of the sample's depth_m and instance_ids digests when decided (labeler/review)"
    )
    track_id: int | None = Field(
        None,
        ge=1,
        description="made on this track (the review's track page): one such record per frame of the track, "
        "on the track's object there; None: made on the sample or object alone",
    )


class DoubtPass(Record):
    """`DATASET/doubt.json`: what the last `labeler doubt` pass computed, and with what."""

    schema_version: Literal[1] = DOUBT_PASS_SCHEMA_VERSION
    dataset_version: str
    model: str | None = Field(
        None, description="the monocular model: 'foundation-stereo:<checkpoint>' or 'heads:<run>'; None: none"
    )
    n_mono: int = Field(ge=0, description="samples given mono_disagreement")
    n_temporal: int = Field(ge=0, description="video frames given temporal_instability")
    n_shards_rewritten: int = Field(ge=0)
    seconds: float = Field(ge=0)
    labeler_version: str
    record_sha256: str | None = Field(
        None, description="sha256 of this record without this field (labeler/dataset/seal.py): any edit shows"
    )
