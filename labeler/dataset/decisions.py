"""Review decisions in force: what `labeler review` saved, as the exports and training apply it.

The log (`DATASET/reviews.jsonl`, written by `sidecars.append_reviews`) keeps every decision; the
one in force for a (sample, object) is its latest, unless that is `clear`, and only while the sample
still has the labels it was made on (`labels_sha256`, over the sample's depth_m and instance_ids
digests). A decision on labels that have since changed, or on a sample the dataset no longer has, is
stale: listed, never applied.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from data_schema.review import Decision, Review
from labeler.dataset.sidecars import append_reviews, read_reviews

if TYPE_CHECKING:
    from labeler.dataset.reader import Dataset

Key = tuple[str, int | None]  # (sample_id, object id or None for the whole sample)


def labels_sha256(digest_depth_m: str, digest_instance_ids: str) -> str:
    """What a decision is tied to: the sample's depth and masks as stored."""
    return hashlib.sha256(f"{digest_depth_m}:{digest_instance_ids}".encode()).hexdigest()


def current_labels(ds: Dataset) -> dict[str, str]:
    """{sample_id: labels_sha256} of the ok samples (one scan of three columns)."""
    import pyarrow.compute as pc

    t = ds.samples.to_table(
        columns=["sample_id", "digest_depth_m", "digest_instance_ids"], filter=pc.field("status") == "ok"
    )
    return {
        sid: labels_sha256(d, i)
        for sid, d, i in zip(
            t.column("sample_id").to_pylist(),
            t.column("digest_depth_m").to_pylist(),
            t.column("digest_instance_ids").to_pylist(),
            strict=True,
        )
    }


@dataclass(frozen=True)
class Decisions:
    """The decisions in force (`current`) and the stale ones, each the latest of its key."""

    current: dict[Key, Review] = field(default_factory=dict)
    stale: dict[Key, Review] = field(default_factory=dict)

    def of(self, sample_id: str, object_id: int | None = None) -> Decision | None:
        r = self.current.get((sample_id, object_id))
        return r.decision if r is not None else None

    @property
    def rejected_samples(self) -> set[str]:
        return {s for (s, o), r in self.current.items() if o is None and r.decision == "reject"}

    @property
    def rejected_objects(self) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for (s, o), r in self.current.items():
            if o is not None and r.decision == "reject":
                out.setdefault(s, set()).add(o)
        return out

    def kept(self, sample_ids: Sequence[str]) -> list[str]:
        """`sample_ids` without the rejected samples, in their order: the one rule training applies."""
        rejected = self.rejected_samples
        return [s for s in sample_ids if s not in rejected]

    def counts(self) -> dict[str, Counter[str]]:
        """{"samples": Counter(decision), "objects": Counter(decision)} of the decisions in force."""
        out: dict[str, Counter[str]] = {"samples": Counter(), "objects": Counter()}
        for (_, o), r in self.current.items():
            out["samples" if o is None else "objects"][r.decision] += 1
        return out

    def summary(self) -> str:
        """`reviewed: 3 samples (1 accept, 2 reject), 1 object (1 reject); 1 stale` (validate prints it)."""
        c = self.counts()

        def part(kind: str, counter: Counter[str]) -> str:
            n = sum(counter.values())
            noun = kind if n != 1 else kind[:-1]
            inner = ", ".join(f"{counter[d]} {d}" for d in ("accept", "reject", "flag") if counter[d])
            return f"{n} {noun}" + (f" ({inner})" if inner else "")

        stale = f"; {len(self.stale)} stale (labels changed since)" if self.stale else ""
        return f"reviewed: {part('samples', c['samples'])}, {part('objects', c['objects'])}{stale}"


def decisions_from(reviews: Sequence[Review], labels: dict[str, str]) -> Decisions:
    """Fold a log of decisions (in the order made) against the samples' current labels."""
    latest: dict[Key, Review] = {}
    for r in reviews:
        latest[(r.sample_id, r.object_id)] = r
    current, stale = {}, {}
    for key, r in latest.items():
        if r.decision == "clear":
            continue
        if labels.get(r.sample_id) == r.labels_sha256:
            current[key] = r
        else:
            stale[key] = r
    return Decisions(current, stale)


def load_decisions(ds: Dataset, *, problems: list[str] | None = None) -> Decisions:
    """The decisions in force for a dataset (reads the log and three columns of the samples table)."""
    reviews = read_reviews(ds.path, problems=problems)
    if not reviews:
        return Decisions()
    return decisions_from(reviews, current_labels(ds))


def decide(
    dataset: str | Path,
    *,
    sample_id: str,
    labels: str,
    decision: Decision,
    object_id: int | None = None,
    note: str = "",
    user: str,
) -> Review:
    """Save one decision now (appended and fsynced before this returns)."""
    review = Review(
        sample_id=sample_id,
        object_id=object_id,
        decision=decision,
        note=note,
        time=datetime.now(UTC),
        user=user,
        labels_sha256=labels,
    )
    append_reviews(dataset, [review])
    return review


def decide_track(
    dataset: str | Path,
    *,
    track_id: int,
    frames: Sequence[tuple[str, int, str]],
    decision: Decision,
    note: str = "",
    user: str,
) -> list[Review]:
    """Save a decision on a track now: one record per frame, on the track's object there, each tied to
    its frame's labels, all appended (and fsynced) in one write.

    Why a record per frame and not one per track: every reader of the log (the exports' rejected
    objects, training, `validate`, staleness) then applies it as it applies a decision made on that
    object, with no track table to consult, and a frame relabelled since goes stale alone.

    Args:
        frames: (sample_id, object id, labels_sha256) of every labelled frame of the track.
    """
    now = datetime.now(UTC)
    reviews = [
        Review(
            sample_id=sid,
            object_id=oid,
            decision=decision,
            note=note,
            time=now,
            user=user,
            labels_sha256=labels,
            track_id=track_id,
        )
        for sid, oid, labels in frames
    ]
    append_reviews(dataset, reviews)
    return reviews


def kept_sample_ids(ds: Dataset, sample_ids: Sequence[str], *, include_rejected: bool = False) -> list[str]:
    """`sample_ids` without the rejected samples (all of them with `include_rejected`): what train-heads,
    finetune and train-stereo train and evaluate on (their `--include-rejected` flag)."""
    if include_rejected:
        return list(sample_ids)
    return load_decisions(ds).kept(sample_ids)
