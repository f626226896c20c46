"""`labeler diff A B` over tracks, when both datasets were labelled with `--track`.

Over the samples both have (matched by id), every pair of an A track and a B track gathers the pixels their
objects share at each frame (from the joint histogram of the two instance maps the diff reads for a
changed sample; for an unchanged sample the maps are equal, so an object is its own counterpart and the
tables suffice). A track pair's IoU is the sum of those intersections over the sum of the unions, and the
tracks are matched one to one, greedily by that IoU (largest first, IoU >= 0.5, as the diff matches
objects). A as the reference: at each frame an A track's object has a counterpart in B (the B object the
diff matched it to); an ID switch is a frame where that counterpart's track differs from the one at the
track's previous frame with a counterpart. Per matched pair, the depth difference is B - A of the two
objects' median depths over the frames where they are each other's counterparts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_schema.diff import TrackDiff, TrackMatch

MATCH_IOU = 0.5  # labeler/review/diff.py's, for objects


@dataclass(frozen=True)
class TrackedObject:
    """An object of a sample as the track diff sees it."""

    track_id: int | None
    depth_m: float | None
    area_px: int


def objects_by_row(objects: Any) -> dict[int, dict[int, TrackedObject]]:
    """{sample row: {object id: its track, depth, area}} from an objects table (pyarrow)."""
    names = objects.schema.names
    tracks = objects["track_id"].to_pylist() if "track_id" in names else [None] * objects.num_rows
    out: dict[int, dict[int, TrackedObject]] = defaultdict(dict)
    for row, oid, tid, depth, area in zip(
        objects["row"].to_pylist(),
        objects["id"].to_pylist(),
        tracks,
        objects["depth_m_median"].to_pylist(),
        objects["area_px"].to_pylist(),
        strict=True,
    ):
        out[row][oid] = TrackedObject(tid, depth, area)
    return out


@dataclass
class _Seen:
    """An A track at one frame: the B track of its object's counterpart (None: none) and the depths."""

    order: tuple[Any, ...]
    counterpart: int | None
    depth_a: float | None
    depth_b: float | None


class TrackTally:
    """The overlaps of A's and B's tracks, gathered frame by frame (`add`), and the report (`result`)."""

    def __init__(
        self,
        objects_a: dict[int, dict[int, TrackedObject]],
        objects_b: dict[int, dict[int, TrackedObject]],
        sequences_a: dict[int, str],
        tracks_b: set[int],
    ) -> None:
        self.objects_a, self.objects_b = objects_a, objects_b
        self.sequences_a = sequences_a  # every A track -> its sequence
        self.tracks_b = tracks_b
        self.inter: Counter[tuple[int, int]] = Counter()
        self.area_a: Counter[int] = Counter()
        self.area_b: Counter[int] = Counter()
        self.seen_a: dict[int, list[_Seen]] = defaultdict(list)
        self.frames_b: Counter[int] = Counter()

    def add(
        self,
        row_a: int,
        row_b: int,
        order: tuple[Any, ...],
        joint: np.ndarray | None = None,
        matches: list[tuple[int, int, float]] | None = None,
    ) -> None:
        """One sample both have. `order`: where it falls in its sequence (frame order). `joint` and
        `matches`: the joint histogram of the two instance maps and the objects the diff matched; None for
        an unchanged sample (equal maps: each object matches itself)."""
        a, b = self.objects_a.get(row_a, {}), self.objects_b.get(row_b, {})
        if joint is None:
            pairs = {oid: oid for oid in a if oid in b}
            for oid, o in a.items():
                tb = b[oid].track_id if oid in b else None
                if o.track_id is not None and tb is not None:
                    self.inter[(o.track_id, tb)] += o.area_px
        else:
            pairs = {ia: ib for ia, ib, _ in matches or []}
            for ia, ib in zip(*np.nonzero(joint[1:, 1:]), strict=True):
                oa, ob = a.get(int(ia) + 1), b.get(int(ib) + 1)
                if oa is not None and ob is not None and oa.track_id is not None and ob.track_id is not None:
                    self.inter[(oa.track_id, ob.track_id)] += int(joint[ia + 1, ib + 1])
        for oid, o in a.items():
            if o.track_id is None:
                continue
            self.area_a[o.track_id] += o.area_px
            other = b.get(pairs[oid]) if oid in pairs else None
            counterpart = other.track_id if other is not None else None
            depth_b = other.depth_m if other is not None else None
            self.seen_a[o.track_id].append(_Seen(order, counterpart, o.depth_m, depth_b))
        for o in b.values():
            if o.track_id is not None:
                self.area_b[o.track_id] += o.area_px
                self.frames_b[o.track_id] += 1

    def result(self) -> TrackDiff:
        ious = []
        for (ta, tb), inter in self.inter.items():
            union = self.area_a[ta] + self.area_b[tb] - inter
            ious.append((inter / union if union > 0 else 0.0, ta, tb))
        ious.sort(key=lambda x: (-x[0], x[1], x[2]))
        matched: list[TrackMatch] = []
        used_a: set[int] = set()
        used_b: set[int] = set()
        for iou, ta, tb in ious:
            if iou < MATCH_IOU:
                break
            if ta in used_a or tb in used_b:
                continue
            used_a.add(ta)
            used_b.add(tb)
            matched.append(self._match(ta, tb, iou))
        switches = sum(_switches(self._seen(ta)) for ta in self.sequences_a)
        return TrackDiff(
            tracks_a=len(self.sequences_a),
            tracks_b=len(self.tracks_b),
            matched=matched,
            only_a=sorted(set(self.sequences_a) - used_a),
            only_b=sorted(self.tracks_b - used_b),
            id_switches=switches,
        )

    def _seen(self, ta: int) -> list[_Seen]:
        return sorted(self.seen_a.get(ta, []), key=lambda s: s.order)

    def _match(self, ta: int, tb: int, iou: float) -> TrackMatch:
        seen = self._seen(ta)
        both = [s for s in seen if s.counterpart == tb]
        diffs = [s.depth_b - s.depth_a for s in both if s.depth_a is not None and s.depth_b is not None]
        return TrackMatch(
            track_a=ta,
            track_b=tb,
            sequence=self.sequences_a.get(ta),
            iou=min(1.0, iou),
            frames_a=len(seen),
            frames_b=self.frames_b[tb],
            frames_both=len(both),
            id_switches=_switches(seen),
            depth_m_diff_median=float(np.median(diffs)) if diffs else None,
            depth_m_diff_max_abs=float(np.max(np.abs(diffs))) if diffs else None,
        )


def _switches(seen: list[_Seen]) -> int:
    """Frames (in order) whose counterpart track differs from the last one seen with a counterpart."""
    last, n = None, 0
    for s in seen:
        if s.counterpart is None:
            continue
        n += last is not None and s.counterpart != last
        last = s.counterpart
    return n


def track_tally(side_a: Any, side_b: Any) -> TrackTally | None:
    """The tally for two diff sides (labeler/review/diff.py `Side`), or None unless both have tracks."""
    from labeler.dataset.tables import read_tracks

    ref_a, ref_b = side_a.ds.manifest.tracks, side_b.ds.manifest.tracks
    if ref_a is None or ref_b is None:
        return None
    tracks_a = read_tracks(side_a.ds.path, ref_a)
    tracks_b = read_tracks(side_b.ds.path, ref_b)
    return TrackTally(
        objects_by_row(side_a.objects),
        objects_by_row(side_b.objects),
        {t.track_id: t.sequence for t in tracks_a},
        {t.track_id for t in tracks_b},
    )
