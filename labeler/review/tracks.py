"""A dataset's tracks as the review shows them: the tracks table (`--track` runs) with each track's depth
jump (labeler/doubt.py) and the decisions on its frames, and one track's frames in order.

A track's frames are the object rows carrying its `track_id` (one per labelled frame it is in), joined to
their samples for the frame index and time; the decision shown for a frame is the one in force on that
object (a decision on the track is saved as one such record per frame: labeler/dataset/decisions.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labeler.doubt import TRACK_JUMP, TRACK_JUMP_FULL, track_jumps

if TYPE_CHECKING:
    from data_schema.manifest import TrackRow
    from labeler.review.listing import ReviewData


@dataclass(frozen=True)
class TrackFrame:
    """One labelled frame of a track: where the object is and what it measured there."""

    sample_id: str
    row: int
    object_id: int
    frame_index: int | None
    timestamp_s: float | None
    depth_m_median: float | None
    jump_per_s: float | None  # the track's depth jump at this frame (to its previous or next), 1/s
    decision: str | None  # the decision in force on this object


@dataclass(frozen=True)
class TrackSummary:
    """A row of the tracks listing: the tracks table's row, its largest depth jump and its decisions."""

    track: TrackRow
    jump_per_s: float | None
    decisions: dict[str, int]  # decision -> frames with it in force

    @property
    def flagged(self) -> bool:
        """The depth-jump doubt signal: the median depth changes faster than a real object moves."""
        return self.jump_per_s is not None and self.jump_per_s >= TRACK_JUMP_FULL


def tracks(data: ReviewData) -> list[TrackRow]:
    """The tracks table's rows by track id; [] for a dataset labelled without `--track`."""
    from labeler.dataset.tables import read_tracks

    data.refresh()
    ref = data.ds.manifest.tracks
    return sorted(read_tracks(data.path, ref), key=lambda t: t.track_id) if ref is not None else []


@dataclass(frozen=True)
class TrackPage:
    """One page of the tracks listing, and the counts over all of them."""

    rows: list[TrackSummary]
    page: int
    pages: int
    total: int  # tracks the listing shows (all, or the flagged ones)
    flagged: int  # flagged tracks in the dataset


def track_listing(data: ReviewData, *, page: int = 1, flagged_only: bool = False) -> TrackPage:
    """A page of the tracks (by id; `flagged_only`: those whose depth jump flags them) with their depth
    jumps and the decisions in force on their frames. The jumps come from one grouped pass over the objects
    table; decisions are counted for the page's tracks only, so a page costs the same however many tracks
    the dataset has."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from labeler.review.listing import PAGE_SIZE

    rows = tracks(data)
    jumps = track_jumps(data.objects) if rows else {}
    flagged = {t for t, j in jumps.items() if j >= TRACK_JUMP_FULL}
    if flagged_only:
        rows = [t for t in rows if t.track_id in flagged]
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    counts: dict[int, Counter[str]] = {}
    if shown:
        ids = [t.track_id for t in shown]
        column = data.objects.column("track_id")
        mine = data.objects.filter(
            pc.fill_null(pc.is_in(column, value_set=pa.array(ids, column.type)), False)
        )
        samples = data.samples.filter(pc.is_in(data.samples.column("row"), value_set=mine.column("row")))
        sample_of = dict(
            zip(samples.column("row").to_pylist(), samples.column("sample_id").to_pylist(), strict=True)
        )
        for row, oid, tid in zip(
            mine.column("row").to_pylist(),
            mine.column("id").to_pylist(),
            mine.column("track_id").to_pylist(),
            strict=True,
        ):
            d = data.decisions.of(sample_of[row], oid)
            if d is not None:
                counts.setdefault(tid, Counter())[d] += 1
    summaries = [TrackSummary(t, jumps.get(t.track_id), dict(counts.get(t.track_id, {}))) for t in shown]
    return TrackPage(summaries, page, pages, len(rows), len(flagged))


def track_frames(data: ReviewData, track_id: int) -> list[TrackFrame]:
    """The track's labelled frames in frame order ([] for a track id no object carries)."""
    import pyarrow.compute as pc

    data.refresh()
    if "track_id" not in data.objects.column_names:
        return []
    objects = data.objects.filter(pc.fill_null(pc.equal(data.objects.column("track_id"), track_id), False))
    if objects.num_rows == 0:
        return []
    samples = data.samples.filter(pc.is_in(data.samples.column("row"), value_set=objects.column("row")))
    by_row = {
        s["row"]: s for s in samples.select(["row", "sample_id", "frame_index", "timestamp_s"]).to_pylist()
    }
    frames = []
    for o in objects.select(["row", "id", "depth_m_median", TRACK_JUMP]).to_pylist():
        s: dict[str, Any] = by_row[o["row"]]
        frames.append(
            TrackFrame(
                sample_id=s["sample_id"],
                row=o["row"],
                object_id=o["id"],
                frame_index=s["frame_index"],
                timestamp_s=s["timestamp_s"],
                depth_m_median=o["depth_m_median"],
                jump_per_s=o[TRACK_JUMP],
                decision=data.decisions.of(s["sample_id"], o["id"]),
            )
        )
    frames.sort(key=lambda f: (f.frame_index if f.frame_index is not None else f.row, f.row))
    return frames


def summary_of(track: TrackRow, frames: list[TrackFrame]) -> TrackSummary:
    """One track's listing row from its frames (what `track_listing` gives it, without the whole table)."""
    jumps = [f.jump_per_s for f in frames if f.jump_per_s is not None]
    counts = Counter(f.decision for f in frames if f.decision is not None)
    return TrackSummary(track, max(jumps) if jumps else None, dict(counts))


def track_state(frames: list[TrackFrame]) -> dict[str, Any]:
    """What the track page's script shows after a decision: each frame's decision by sample id."""
    return {"frames": {f.sample_id: f.decision for f in frames}}
