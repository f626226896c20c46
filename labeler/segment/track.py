"""Linking a sequence's objects over its frames: association by mask IoU and depth (`--track`).

The tracker sees one labelled frame at a time, in frame order, as the instance map the mask backend made
((H, W) uint16, 0 = no object) and each object's median depth. An object joins the live track whose last
mask it overlaps most (IoU at least `min_iou`), provided its median depth moved by at most
`max_depth_jump_m` and, for class-naming backends, the class is the same; the pairs are chosen together
(Hungarian assignment on IoU), so two objects never take one track. An object left over starts a new
track; a track not seen for more than `max_gap_frames` frames ends. Skipped still frames are not shown to
the tracker: nothing moved in them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schema.manifest import TrackingConfig, TrackRow


def iou_matrix(a: np.ndarray, b: np.ndarray, ids_a: list[int], ids_b: list[int]) -> np.ndarray:
    """(len(ids_a), len(ids_b)) mask IoU between the objects of two instance maps of one shape
    ((H, W) integer ids, 0 = background), from one joint histogram of the two maps."""
    if a.shape != b.shape:
        raise ValueError(f"instance maps of different shapes {a.shape} and {b.shape}")
    if not ids_a or not ids_b:
        return np.zeros((len(ids_a), len(ids_b)), np.float64)
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a.astype(np.int64).ravel() * nb + b.astype(np.int64).ravel(), minlength=na * nb)
    joint = joint.reshape(na, nb)
    area_a, area_b = joint.sum(1), joint.sum(0)
    ia, ib = np.asarray(ids_a), np.asarray(ids_b)
    inter = joint[np.ix_(ia, ib)].astype(np.float64)
    union = area_a[ia][:, None] + area_b[ib][None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def gated_pairs(
    score: np.ndarray,
    depths_m: tuple[list[float | None], list[float | None]],
    class_names: tuple[list[str | None], list[str | None]],
    cfg: TrackingConfig,
) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs of an IoU matrix: no pair whose median depths (where both are known)
    differ by more than `max_depth_jump_m` or whose classes (where both are named) differ; the assignment
    of the largest total IoU (Hungarian), keeping the pairs at `min_iou` or above. `score` is changed."""
    from scipy.optimize import linear_sum_assignment

    for k, (da, na) in enumerate(zip(depths_m[0], class_names[0], strict=True)):
        for j, (db, nb) in enumerate(zip(depths_m[1], class_names[1], strict=True)):
            if da is not None and db is not None and abs(db - da) > cfg.max_depth_jump_m:
                score[k, j] = 0.0
            if na is not None and nb is not None and na != nb:
                score[k, j] = 0.0
    rows, cols = linear_sum_assignment(-score)
    return [(int(k), int(j)) for k, j in zip(rows, cols, strict=True) if score[k, j] >= cfg.min_iou]


@dataclass
class _Track:
    track_id: int
    ids: np.ndarray  # the instance map of its last frame
    object_id: int  # its object's id in that map
    depth_m: float | None
    class_name: str | None
    last_frame: int


class IouDepthTracker:
    """Track ids for one sequence's objects, frame by frame (see the module docstring)."""

    def __init__(self, config: TrackingConfig | None = None, *, first_id: int = 1) -> None:
        self.config = config or TrackingConfig()
        self.next_id = first_id
        self._live: list[_Track] = []

    def step(
        self,
        frame_index: int,
        ids: np.ndarray,
        depth_m: dict[int, float | None],
        class_name: dict[int, str | None] | None = None,
    ) -> dict[int, int]:
        """Track ids of this frame's objects ({object id: track id}); `depth_m`: each object's median depth
        (None: unknown), whose keys are the frame's objects."""
        cfg = self.config
        names = class_name or {}
        self._live = [t for t in self._live if frame_index - t.last_frame <= cfg.max_gap_frames]
        objects = sorted(depth_m)
        out: dict[int, int] = {}
        if self._live and objects:
            score = np.zeros((len(self._live), len(objects)))
            groups: dict[int, list[int]] = {}  # tracks last seen in one frame share one joint histogram
            for k, t in enumerate(self._live):
                groups.setdefault(id(t.ids), []).append(k)
            for ks in groups.values():
                first = self._live[ks[0]].ids
                score[ks] = iou_matrix(first, ids, [self._live[k].object_id for k in ks], objects)
            pairs = gated_pairs(
                score,
                ([t.depth_m for t in self._live], [depth_m[o] for o in objects]),
                ([t.class_name for t in self._live], [names.get(o) for o in objects]),
                cfg,
            )
            for k, j in pairs:
                out[objects[j]] = self._live[k].track_id
        by_id = {t.track_id: t for t in self._live}
        for oid in objects:
            if oid not in out:
                out[oid] = self.next_id
                self.next_id += 1
            tid = out[oid]
            track = by_id.get(tid)
            name = names.get(oid) if track is None else track.class_name or names.get(oid)
            by_id[tid] = _Track(tid, ids, oid, depth_m[oid], name, frame_index)
        self._live = sorted(by_id.values(), key=lambda t: t.track_id)
        return out


@dataclass
class _Border:
    """The last frame seen by a ChunkStitcher."""

    frame: int
    chunk: int
    ids: np.ndarray
    track: dict[int, int]  # object id -> track id
    depth_m: dict[int, float | None]
    class_name: dict[int, str | None]


class ChunkStitcher:
    """Track ids for a sequence whose objects already carry ids within chunks: a backend that tracks
    objects itself (sam2 --track) labels each chunk (the sequence's frames within one shard) in one call,
    and chunks run in parallel. Within a chunk, an object keeps the track of its chunk id. At the first
    frame of the next chunk, the objects that chunk starts with take the tracks of the previous frame's
    objects by the tracker's rules (mask IoU at least `min_iou`, one-to-one, depth jump at most
    `max_depth_jump_m`, the same class, a gap of at most `max_gap_frames`); the others, and objects a chunk
    adds later (new objects at its keyframes), start new tracks.

    An object without a chunk id is its own track unless stitched. The result depends only on which
    objects share a chunk id, so stitching stored track ids again gives the same tracks."""

    def __init__(self, config: TrackingConfig | None = None, *, first_id: int = 1) -> None:
        self.config = config or TrackingConfig()
        self.next_id = first_id
        self._of: dict[tuple[int, int], int] = {}  # (chunk, chunk id) -> track id
        self._prev: _Border | None = None

    def step(
        self,
        frame_index: int,
        chunk: int,
        ids: np.ndarray,
        chunk_id: dict[int, int | None],
        depth_m: dict[int, float | None],
        class_name: dict[int, str | None] | None = None,
    ) -> dict[int, int]:
        """Track ids of this frame's objects ({object id: track id}); `chunk_id`: each object's id within
        its chunk (the keys are the frame's objects)."""
        names = class_name or {}
        out = {
            o: self._of[(chunk, c)] for o, c in chunk_id.items() if c is not None and (chunk, c) in self._of
        }
        fresh = sorted(o for o in chunk_id if o not in out)
        prev = self._prev
        if fresh and prev is not None and prev.chunk != chunk:
            out.update(self._stitch(prev, frame_index, ids, fresh, depth_m, names, set(out.values())))
        for o in fresh:
            if o not in out:
                out[o] = self.next_id
                self.next_id += 1
            c = chunk_id[o]
            if c is not None:
                self._of[(chunk, c)] = out[o]
        self._prev = _Border(frame_index, chunk, ids, dict(out), dict(depth_m), dict(names))
        return out

    def _stitch(
        self,
        prev: _Border,
        frame_index: int,
        ids: np.ndarray,
        fresh: list[int],
        depth_m: dict[int, float | None],
        names: dict[int, str | None],
        taken: set[int],
    ) -> dict[int, int]:
        cfg = self.config
        if frame_index - prev.frame > cfg.max_gap_frames:
            return {}
        cand = sorted(o for o, t in prev.track.items() if t not in taken)
        if not cand:
            return {}
        pairs = gated_pairs(
            iou_matrix(prev.ids, ids, cand, fresh),
            ([prev.depth_m.get(o) for o in cand], [depth_m.get(o) for o in fresh]),
            ([prev.class_name.get(o) for o in cand], [names.get(o) for o in fresh]),
            cfg,
        )
        return {fresh[j]: prev.track[cand[k]] for k, j in pairs}


# ------------------------------------------------------------------ a track's summary (tracks table, predict)


@dataclass(frozen=True)
class Sighting:
    """One object of one track at one frame."""

    frame: int
    time_s: float | None
    depth_m: float | None
    class_name: str | None


def track_row(track_id: int, sequence: str, seen: list[Sighting]) -> TrackRow:
    """A track's row from its objects over its frames (in frame order)."""
    seen = sorted(seen, key=lambda x: x.frame)
    first, last = seen[0], seen[-1]
    with_depth = [x for x in seen if x.depth_m is not None]
    nearest = min(with_depth, key=lambda x: x.depth_m or 0.0) if with_depth else None
    speed = None
    if (
        first.depth_m is not None
        and last.depth_m is not None
        and first.time_s is not None
        and last.time_s is not None
        and last.time_s > first.time_s
    ):
        speed = (first.depth_m - last.depth_m) / (last.time_s - first.time_s)
    names = [x.class_name for x in seen if x.class_name is not None]
    return TrackRow(
        track_id=track_id,
        class_name=max(sorted(set(names)), key=names.count) if names else None,
        sequence=sequence,
        first_frame=first.frame,
        last_frame=last.frame,
        first_time_s=first.time_s,
        last_time_s=last.time_s,
        frames_seen=len(seen),
        depth_m_first=first.depth_m,
        depth_m_last=last.depth_m,
        depth_m_nearest=nearest.depth_m if nearest else None,
        nearest_frame=nearest.frame if nearest else None,
        nearest_time_s=nearest.time_s if nearest else None,
        approach_speed_m_s=speed,
    )
