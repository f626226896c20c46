"""Objectness + boundary maps (+ metric depth) -> class-agnostic instances with their depth.

1. foreground = P(object) > t_obj;
2. cuts = P(boundary) > t_bnd, or (with depth) a relative depth step > depth_jump across a 5 px window;
3. seeds = connected components of foreground minus cuts, smaller than min_area dropped;
4. every foreground pixel joins a seed by watershed on the boundary probability (cut pixels go back to
   the object on their side), so objects touch again but stay split where a boundary or depth step ran;
5. per object: area, bbox, mean objectness (score) and depth median / p10 / p90 (labeler.depth).
"""

from __future__ import annotations

import numpy as np

from data_schema.heads import InstanceParams
from data_schema.manifest import ObjectRecord

DEPTH_STEP_REACH_PX = 2  # the depth step is measured between pixels this far on either side


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def depth_steps(depth_m: np.ndarray, rel_jump: float, *, reach: int = DEPTH_STEP_REACH_PX) -> np.ndarray:
    """(H, W) bool: max/min depth over a (2*reach+1)^2 window differ by more than the factor 1 + rel_jump.

    Args:
        depth_m: (H, W) float, metres, positive (NaN treated as no step).
    """
    import cv2

    if rel_jump <= 0:
        return np.zeros(depth_m.shape, bool)
    d = np.nan_to_num(depth_m.astype(np.float32), nan=0.0)
    k = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    hi = cv2.dilate(d, k)
    lo = cv2.erode(np.where(d > 0, d, np.float32(np.inf)), k)
    return (d > 0) & np.isfinite(lo) & (hi > lo * (1 + rel_jump))


def instances_from_maps(
    objectness: np.ndarray, boundary: np.ndarray, depth_m: np.ndarray | None, params: InstanceParams
) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids from the heads' maps.

    Args:
        objectness, boundary: (H, W) probabilities in [0, 1].
        depth_m: (H, W) predicted metric depth, or None (no depth cut).
        params: thresholds (see InstanceParams).

    Returns:
        ids (H, W) uint16, 0 = none, 1..K by decreasing area; scores (K,) mean objectness of each id.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    fg = objectness > params.objectness
    cuts = boundary > params.boundary
    if depth_m is not None:
        cuts |= depth_steps(depth_m, params.depth_jump)
    min_area = max(1, int(params.min_area_frac * objectness.size))
    seeds, n = ndimage.label(fg & ~cuts)
    if n:
        areas = np.bincount(seeds.ravel(), minlength=n + 1)
        keep = areas >= min_area
        keep[0] = False
        remap = np.where(keep, np.cumsum(keep), 0)
        seeds = remap[seeds]
    if not seeds.any():
        return np.zeros(objectness.shape, np.uint16), np.zeros(0, np.float32)
    grown = watershed(boundary.astype(np.float32), markers=seeds, mask=fg)
    k = int(grown.max())
    areas = np.bincount(grown.ravel(), minlength=k + 1)
    order = [i for i in np.argsort(-areas[1:], kind="stable") + 1 if areas[i] >= min_area]
    remap = np.zeros(k + 1, np.int64)
    remap[order] = np.arange(1, len(order) + 1)
    ids = remap[grown].astype(np.uint16)
    sums = np.bincount(ids.ravel(), weights=objectness.ravel(), minlength=len(order) + 1)
    counts = np.bincount(ids.ravel(), minlength=len(order) + 1)
    scores = (sums[1:] / np.maximum(counts[1:], 1)).astype(np.float32)
    return ids, scores


def object_table(ids: np.ndarray, scores: np.ndarray, depth_m: np.ndarray | None) -> list[ObjectRecord]:
    """Per-object records (area, bbox, score, depth stats; depth None without a depth map)."""
    from labeler.depth import object_records

    depth = depth_m if depth_m is not None else np.full(ids.shape, np.nan, np.float32)
    return object_records(ids, depth.astype(np.float32), scores)
