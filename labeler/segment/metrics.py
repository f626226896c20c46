"""Objects against rendered truth: precision and recall of the objects a labelled sample reports.

An object is *right* when its mask overlaps a true object at IoU >= `min_iou` and its median depth is
within `depth_tol_rel` of that object's (median over the object's visible pixels). At IoU >= 0.5 a
true object has at most one such match, so precision = right objects / reported objects and
recall = true objects with a right match / true objects. Everything a backend reports counts: a wall
or floor reported as an object, or a strip along a border, lowers the precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schema.manifest import ObjectPolicy, ObjectRecord
from labeler.depth import apply_object_policy, instance_map, object_records
from labeler.segment.base import Masks


@dataclass(frozen=True)
class ObjectScores:
    """Counts over one or more samples; add them with `+`."""

    reported: int = 0
    true: int = 0
    right: int = 0  # reported objects that match a true one
    found: int = 0  # true objects matched by a reported one

    def __add__(self, other: ObjectScores) -> ObjectScores:
        return ObjectScores(
            self.reported + other.reported,
            self.true + other.true,
            self.right + other.right,
            self.found + other.found,
        )

    @property
    def precision(self) -> float:
        return self.right / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.true if self.true else 1.0


def reported_objects(
    masks: Masks, depth_m: np.ndarray, policy: ObjectPolicy | None = None
) -> tuple[np.ndarray, list[ObjectRecord]]:
    """What the labelling pipeline stores for these masks: the instance map after the object policy
    and the object table (as `labeler.stages.finish_stage` makes them).

    Args:
        masks: a mask backend's output for the sample.
        depth_m: (H, W) float32 metric depth, NaN invalid.
    """
    policy = policy or ObjectPolicy()
    ids, source = instance_map(masks.masks, masks.scores)
    ids, kept, _ = apply_object_policy(ids, depth_m, policy)
    source = source[kept - 1]
    return ids, object_records(ids, depth_m, masks.scores[source], min_depth_px=policy.min_depth_px)


def object_scores(
    ids: np.ndarray,
    objects: list[ObjectRecord],
    truth_ids: np.ndarray,
    truth_depth_m: np.ndarray,
    *,
    min_iou: float = 0.5,
    depth_tol_rel: float = 0.1,
) -> ObjectScores:
    """Score one sample's objects against its truth.

    Args:
        ids: (H, W) int instance map of the reported objects (0 = none).
        objects: their records (`depth_m_median` None never matches).
        truth_ids: (H, W) int true instance ids (0 = background, not an object).
        truth_depth_m: (H, W) float true depth in m.
    """
    true_ids = [int(t) for t in np.unique(truth_ids) if t > 0]
    n, k = int(ids.max()) + 1 if ids.size else 1, int(truth_ids.max()) + 1 if truth_ids.size else 1
    # joint histogram of (reported id, true id) over the pixels: every intersection at once
    joint = np.bincount(ids.ravel().astype(np.int64) * k + truth_ids.ravel(), minlength=n * k).reshape(n, k)
    area_r, area_t = joint.sum(axis=1), joint.sum(axis=0)
    right = set()
    found = set()
    for t in true_ids:
        depth_t = float(np.median(truth_depth_m[truth_ids == t]))
        for o in objects:
            inter = joint[o.id, t]
            iou = inter / (area_r[o.id] + area_t[t] - inter)
            if iou < min_iou or o.depth_m_median is None:
                continue
            if abs(o.depth_m_median / depth_t - 1.0) <= depth_tol_rel:
                right.add(o.id)
                found.add(t)
    return ObjectScores(reported=len(objects), true=len(true_ids), right=len(right), found=len(found))
