"""Metric depth from disparity, instance maps from masks, and per-object depth statistics.

depth_m = fx_px · baseline_m / (disparity_px + doffs_px), with fx and the baseline from the *rectified*
projections (P1, P2) and doffs_px = P2 cx − P1 cx (0 for our own rectification, non-zero for datasets
such as Middlebury whose rectified principal points differ). Invalid depth is NaN, never an epsilon.
"""

from __future__ import annotations

import numpy as np

from data_schema.calibration import StereoCalibration
from data_schema.manifest import DepthSettings, ObjectPolicy, ObjectRecord, SampleStats


def depth_settings(calib: StereoCalibration, *, z_far_m: float) -> DepthSettings:
    p1, p2 = calib.rectification.P1, calib.rectification.P2
    return DepthSettings(
        fx_px=calib.rectified_fx_px,
        baseline_m=calib.rectified_baseline_m,
        doffs_px=float(p2[0][2] - p1[0][2]),
        z_far_m=z_far_m,
    )


def disparity_to_depth(disparity_px: np.ndarray, settings: DepthSettings) -> np.ndarray:
    """(H, W) float32 disparity (NaN invalid) -> (H, W) float32 depth in metres, NaN where the effective
    disparity is not positive or the depth lies beyond z_far_m."""
    d = disparity_px.astype(np.float64) + settings.doffs_px
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = settings.fx_px * settings.baseline_m / d
    depth[~(d > 0) | ~(depth <= settings.z_far_m)] = np.nan
    return depth.astype(np.float32)


def depth_to_disparity(depth_m: np.ndarray, settings: DepthSettings) -> np.ndarray:
    """The inverse of disparity_to_depth on valid pixels (NaN stays NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (settings.fx_px * settings.baseline_m / depth_m.astype(np.float64) - settings.doffs_px).astype(
            np.float32
        )


def instance_map(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resolve overlapping masks into one id map.

    A pixel covered by several masks goes to the highest-scoring one; among equal scores the smaller mask
    wins (so a small object in front of a large one survives). Masks left with no pixel are dropped.

    Args:
        masks: (N, H, W) bool.
        scores: (N,) float.

    Returns:
        instance_ids: (H, W) uint16, 0 = no object, ids 1..K consecutive;
        source: (K,) int, the index into `masks` of each id (id k <- masks[source[k-1]]).
    """
    n, h, w = masks.shape
    if n >= np.iinfo(np.uint16).max:
        raise ValueError(f"{n} masks do not fit a uint16 id map")
    areas = masks.reshape(n, h * w).sum(1)  # not -1: a backend may find no mask (n = 0)
    order = np.lexsort((areas, -scores))  # best first: score descending, then area ascending
    ids = np.zeros((h, w), np.uint16)
    claimed = np.zeros((h, w), bool)
    source = []
    for k in order:
        free = masks[k] & ~claimed
        if not free.any():
            continue
        source.append(k)
        ids[free] = len(source)
        claimed |= free
    return ids, np.asarray(source, dtype=int)


def apply_object_policy(
    instance_ids: np.ndarray, depth_m: np.ndarray, policy: ObjectPolicy
) -> tuple[np.ndarray, np.ndarray, int]:
    """Turn away masks that are not objects (too small, too little valid depth); ids stay 1..K.

    Returns:
        the new id map, `kept` (K,) the old id of each new id, and how many ids were dropped.
    """
    n = int(instance_ids.max()) if instance_ids.size else 0
    flat = instance_ids.ravel()
    area = np.bincount(flat, minlength=n + 1)
    valid = np.bincount(flat, weights=np.isfinite(depth_m).ravel(), minlength=n + 1)
    ids = np.arange(n + 1)
    ok = (area >= policy.min_area_px) & (valid >= policy.min_valid_fraction * np.maximum(area, 1))
    ok &= ids > 0
    present = (area > 0) & (ids > 0)
    kept = np.flatnonzero(ok)
    lut = np.zeros(n + 1, np.uint16)
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
    return lut[instance_ids], kept, int((present & ~ok).sum())


def object_records(
    instance_ids: np.ndarray,
    depth_m: np.ndarray,
    scores: np.ndarray,
    stability: np.ndarray | None = None,
    *,
    min_depth_px: int = 1,
) -> list[ObjectRecord]:
    """Per-object table for an id map: area, bbox, score, depth median / p10 / p90, valid fraction.

    Args:
        instance_ids: (H, W) integer, 0 = none, ids 1..K.
        depth_m: (H, W) float32, NaN invalid.
        scores: (K,) score of id k at scores[k-1]; stability likewise (None: not recorded).
    """
    from scipy import ndimage

    flat = instance_ids.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=len(scores) + 1)
    groups = np.split(depth_m.ravel()[order], np.cumsum(counts)[:-1])
    boxes = ndimage.find_objects(instance_ids.astype(np.int32))
    records = []
    for oid in range(1, len(scores) + 1):
        if counts[oid] == 0 or boxes[oid - 1] is None:
            continue
        ys, xs = boxes[oid - 1]
        depth = groups[oid]
        valid = depth[np.isfinite(depth)]
        # never a depth from a handful of pixels
        stats = np.percentile(valid, [50, 10, 90]) if valid.size >= min_depth_px else (None, None, None)
        records.append(
            ObjectRecord(
                id=oid,
                area_px=int(counts[oid]),
                bbox=[xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                score=float(np.clip(scores[oid - 1], 0, 1)),
                stability=None if stability is None else float(stability[oid - 1]),
                valid_fraction=float(valid.size / depth.size),
                depth_m_median=None if stats[0] is None else float(stats[0]),
                depth_m_p10=None if stats[1] is None else float(stats[1]),
                depth_m_p90=None if stats[2] is None else float(stats[2]),
            )
        )
    return records


def sample_stats(
    depth_m: np.ndarray, confidence: np.ndarray, n_objects: int, *, n_objects_dropped: int = 0
) -> SampleStats:
    valid = np.isfinite(depth_m)
    conf = confidence[np.isfinite(confidence)]
    return SampleStats(
        valid_depth_fraction=float(valid.mean()),
        confidence_mean=float(conf.mean()) if conf.size else None,
        depth_m_min=float(depth_m[valid].min()) if valid.any() else None,
        depth_m_max=float(depth_m[valid].max()) if valid.any() else None,
        n_objects=n_objects,
        n_objects_dropped=n_objects_dropped,
    )
