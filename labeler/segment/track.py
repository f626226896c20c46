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

from data_schema.manifest import TrackingConfig


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
        from scipy.optimize import linear_sum_assignment

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
            for k, t in enumerate(self._live):
                for j, oid in enumerate(objects):
                    d = depth_m[oid]
                    if t.depth_m is not None and d is not None and abs(d - t.depth_m) > cfg.max_depth_jump_m:
                        score[k, j] = 0.0
                    if t.class_name is not None and names.get(oid) not in (None, t.class_name):
                        score[k, j] = 0.0
            rows, cols = linear_sum_assignment(-score)
            for k, j in zip(rows, cols, strict=True):
                if score[k, j] >= cfg.min_iou:
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
