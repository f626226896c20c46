"""`classical` masks: superpixels on colour + disparity edges, merged into instance proposals.

1. Compact-watershed superpixels at a working resolution (`work_max_side`), flooded over the gradient
   of (L*, a*, b*, w * log disparity): their borders snap to colour edges and depth steps alike.
2. Greedy merging over the superpixel adjacency graph, cheapest pair first. Cost = the larger of the
   regions' mean-colour distance (over their texture) and their border's colour contrast in excess of
   their insides. A border along which the disparity steps by more than `depth_jump_rel` (measured a
   few pixels out on each side, less what the surface slope explains) is a wall: the two never merge,
   so objects of one colour at different depths stay apart. Where one plane fits both regions'
   disparities (disparity is affine over a plane) the cost halves: a textured board, wall or floor
   merges into one region, while an object touching the floor does not merge with it.
3. Regions over `max_area_frac` (background) or under `min_area_frac` are dropped. Score = boundary
   evidence (share of the border where the region stands in front of its neighbour by a depth step,
   combined with colour contrast over texture) x compactness (solidity) x share of the outline inside
   the image, so surfaces behind everything (walls, floors) score low. Stability is 1 (no such notion).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.segmentation import watershed

from data_schema.backends import ClassicalMasksConfig
from labeler.segment.base import MASK_BACKENDS, MaskBackend, Masks, check_image

_JUMP_LAB = 25.0  # Lab units the depth channel spans for one `depth_jump_rel` jump (at disparity_weight 1)
_PROBE_PX = 2  # depth is compared this many px either side of a border
_WALL_FRAC = 0.3  # a border is a wall when this share of it is a depth jump
_PLANE_MIN_TOL_PX = 0.5  # rms (px) of a plane fit that still counts as one surface (or depth_jump_rel / 2)
_SMOOTH_MAX = 0.02  # |grad log d| per px above which a pixel sits on a depth step
_CONTRAST_LAB = 20.0  # colour contrast (Lab) of a border over its region's texture: evidence 1 - 1/e


@MASK_BACKENDS.register("classical")
class ClassicalMaskBackend(MaskBackend):
    """Instance proposals from colour and disparity; CPU only, deterministic."""

    name = "classical"
    uses_cuda = False

    def __init__(self, config: ClassicalMasksConfig | None = None, *, device: str = "cpu") -> None:
        config = config or ClassicalMasksConfig()
        if device != "cpu":
            raise ValueError(f"the classical mask backend runs on the CPU only, got device={device!r}")
        self.config = config

    def masks(self, image: np.ndarray, *, disparity_px: np.ndarray | None = None) -> Masks:
        check_image(image, disparity_px)
        h, w = image.shape[:2]
        cfg = self.config
        scale = min(1.0, cfg.work_max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        lab = rgb2lab(small).astype(np.float32)
        log_d = None
        if disparity_px is not None and cfg.disparity_weight > 0:
            log_d = _log_disparity(disparity_px, size)
        jump = float(np.log1p(cfg.depth_jump_rel))
        labels = _superpixels(
            lab,
            log_d,
            n_segments=cfg.n_segments,
            compactness=cfg.compactness,
            depth_scale=cfg.disparity_weight * _JUMP_LAB / jump,
        )
        graph = _border_stats(labels, lab, log_d, jump=jump)
        regions = _merge(
            labels, lab, log_d, graph, threshold=cfg.merge_threshold, plane_tol_rel=cfg.depth_jump_rel / 2
        )
        graph = _border_stats(regions, lab, log_d, jump=jump)
        return _proposals(regions, graph, full_size=(h, w), config=cfg)


def _superpixels(
    lab: np.ndarray, log_d: np.ndarray | None, *, n_segments: int, compactness: float, depth_scale: float
) -> np.ndarray:
    """Compact watershed from a grid of seeds on the colour + depth gradient; (h, w) int labels from 0.

    The gradient is |grad Lab| (Lab units/px) combined with depth_scale * |grad log d|, so a disparity
    jump of `depth_jump_rel` is a ridge as high as a _JUMP_LAB colour edge. Seeds move to the lowest
    gradient in their 5x5 neighbourhood so none sits on an edge.
    """
    h, w = lab.shape[:2]
    g2 = np.zeros((h, w), np.float32)
    channels = [lab[..., c] for c in range(3)]
    scales = [1.0, 1.0, 1.0]
    if log_d is not None and depth_scale > 0:
        channels.append(log_d)
        scales.append(depth_scale)
    for ch, k in zip(channels, scales, strict=True):
        gx = cv2.Sobel(ch, cv2.CV_32F, 1, 0, ksize=3) * np.float32(k / 8)
        gy = cv2.Sobel(ch, cv2.CV_32F, 0, 1, ksize=3) * np.float32(k / 8)
        g2 += gx * gx + gy * gy
    grad = np.sqrt(g2)
    step = max(1.0, float(np.sqrt(h * w / n_segments)))
    ys = np.clip(np.arange(step / 2, h, step).astype(int), 0, h - 1)
    xs = np.clip(np.arange(step / 2, w, step).astype(int), 0, w - 1)
    # move each seed to the gradient minimum of its 5x5 neighbourhood
    r = 2
    pad = np.pad(grad, r, mode="edge")
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    vals = np.stack([pad[yy + r + dy, xx + r + dx] for dy, dx in offsets])
    best = np.asarray(offsets)[np.argmin(vals, axis=0)]
    sy = np.clip(yy + best[..., 0], 0, h - 1).ravel()
    sx = np.clip(xx + best[..., 1], 0, w - 1).ravel()
    markers = np.zeros((h, w), np.int32)
    markers[sy, sx] = np.arange(1, sy.size + 1)
    labels = watershed(grad, markers, compactness=compactness)
    _, compact = np.unique(labels, return_inverse=True)  # two seeds may land on one pixel
    return compact.reshape(h, w).astype(np.int32)


def _log_disparity(disparity_px: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """log disparity at the working size, invalid pixels (NaN, <= 0) filled from the nearest valid one."""
    d = disparity_px.astype(np.float32)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return None
    log_d = np.where(valid, np.log(np.where(valid, d, 1.0)), 0.0).astype(np.float32)
    if not valid.all():
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        log_d = np.asarray(log_d[tuple(idx)], dtype=np.float32)
    if (log_d.shape[1], log_d.shape[0]) != size:
        log_d = cv2.resize(log_d, size, interpolation=cv2.INTER_AREA)
    return log_d


@dataclass(frozen=True)
class _Graph:
    """Borders of a label map.

    Per adjacent label pair `pairs[i] = (a, b)`, a < b: border length (4-adjacent pixel pairs), summed
    colour contrast |dLab| across it, and how many of its pixel pairs see a depth jump with `a` in
    front (`front_lo`) or `b` in front (`front_hi`). Per label: summed colour contrast and count of the
    pixel pairs inside it (its texture), and its pixels on the image frame.
    """

    pairs: np.ndarray  # (E, 2) int
    length: np.ndarray  # (E,) float
    contrast: np.ndarray  # (E,) float, Lab units summed over the border
    front_lo: np.ndarray  # (E,) float
    front_hi: np.ndarray  # (E,) float
    inner_length: np.ndarray  # (N,) float
    inner_contrast: np.ndarray  # (N,) float
    frame: np.ndarray  # (N,) float
    depth_known: bool

    @property
    def jumps(self) -> np.ndarray:
        return self.front_lo + self.front_hi


def _depth_steps(log_d: np.ndarray, axis: int) -> np.ndarray:
    """Per 4-adjacent pixel pair along `axis`: the log-disparity step across it beyond the local slope.

    The step is measured _PROBE_PX px out on each side (so a jump the matcher blurred over a few pixels
    still counts), less the change the surface slope on either side predicts (taken only when both sides
    slope the same way), so a slanted floor is continuous and an object's silhouette is not.
    Returns (size - 1) along `axis`, positive where the far side (higher index) is nearer.
    """
    p = _PROBE_PX
    q = 2 * p  # slope baseline
    pad = np.pad(log_d, [(p + q, p + q) if ax == axis else (0, 0) for ax in (0, 1)], mode="edge")
    n = log_d.shape[axis] - 1

    def at(offset: int) -> np.ndarray:  # log_d[i + offset] for border i (between i and i + 1)
        sl = slice(p + q + offset, p + q + offset + n)
        return pad[sl] if axis == 0 else pad[:, sl]

    before, after = at(-p), at(1 + p)
    slope_before = (before - at(-p - q)) / q
    slope_after = (at(1 + p + q) - after) / q
    same_way = np.sign(slope_before) == np.sign(slope_after)
    slope = np.where(same_way, np.sign(slope_before) * np.minimum(abs(slope_before), abs(slope_after)), 0.0)
    return (after - before) - slope * (2 * p + 1)


def _border_stats(labels: np.ndarray, lab: np.ndarray, log_d: np.ndarray | None, *, jump: float) -> _Graph:
    """Border and texture statistics of a label map, vectorized over 4-adjacent pixel pairs."""
    n = int(labels.max()) + 1
    keys, contrasts, lo_front, hi_front = [], [], [], []
    inner_len = np.zeros(n)
    inner_con = np.zeros(n)
    for axis in (0, 1):
        head = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        tail = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        a, b = labels[head], labels[tail]
        diff = np.linalg.norm(lab[head] - lab[tail], axis=-1)
        cross = a != b
        inner_len += np.bincount(a[~cross], minlength=n)
        inner_con += np.bincount(a[~cross], weights=diff[~cross], minlength=n)
        keys.append(np.minimum(a, b)[cross].astype(np.int64) * n + np.maximum(a, b)[cross])
        contrasts.append(diff[cross])
        if log_d is not None:
            step = _depth_steps(log_d, axis)[cross]
            tail_front, head_front = step > jump, step < -jump
            tail_is_hi = (b > a)[cross]
            lo_front.append(np.where(tail_is_hi, head_front, tail_front))
            hi_front.append(np.where(tail_is_hi, tail_front, head_front))
    key = np.concatenate(keys)
    uniq, inv = np.unique(key, return_inverse=True)
    e = len(uniq)

    def per_pair(parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros(e)
        return np.bincount(inv, weights=np.concatenate(parts).astype(np.float64), minlength=e)

    frame = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    return _Graph(
        pairs=np.stack([uniq // n, uniq % n], axis=1),
        length=np.bincount(inv, minlength=e).astype(np.float64),
        contrast=per_pair(contrasts),
        front_lo=per_pair(lo_front),
        front_hi=per_pair(hi_front),
        inner_length=inner_len,
        inner_contrast=inner_con,
        frame=np.bincount(frame, minlength=n).astype(np.float64),
        depth_known=log_d is not None,
    )


def _plane_moments(labels: np.ndarray, log_d: np.ndarray, n: int) -> np.ndarray:
    """Per label, the sums a least-squares plane d = a x + b y + c needs: (n, 10) float64.

    Only pixels of smooth depth count: those next to a depth step (edges, filled holes) would let a few
    outliers decide whether two regions are one surface.
    """
    h, w = labels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    step = (
        np.hypot(cv2.Sobel(log_d, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(log_d, cv2.CV_32F, 0, 1, ksize=3)) / 8
    )
    smooth = (cv2.dilate((step > _SMOOTH_MAX).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0).ravel()
    x, y = (xs / w).ravel()[smooth], (ys / h).ravel()[smooth]
    d = np.exp(log_d.astype(np.float64)).ravel()[smooth]
    flat = labels.ravel()[smooth]
    terms = [x * x, x * y, x, y * y, y, np.ones_like(x), x * d, y * d, d, d * d]
    return np.stack([np.bincount(flat, weights=t, minlength=n) for t in terms], axis=1)


def _plane_rms(m: np.ndarray) -> tuple[float, float]:
    """(rms residual, mean) in px of the best plane through the disparities summed in moments `m`.

    Fewer than three smooth pixels fit any plane: (0, 0).
    """
    if m[5] < 3:
        return 0.0, 0.0
    a = np.array([[m[0], m[1], m[2]], [m[1], m[3], m[4]], [m[2], m[4], m[5]]])
    v = m[6:9]
    theta = np.linalg.lstsq(a, v, rcond=None)[0] if abs(np.linalg.det(a)) < 1e-12 else np.linalg.solve(a, v)
    sse = max(m[9] - float(theta @ v), 0.0)
    return float(np.sqrt(sse / m[5])), float(m[8] / m[5])


def _merge(
    labels: np.ndarray,
    lab: np.ndarray,
    log_d: np.ndarray | None,
    graph: _Graph,
    *,
    threshold: float,
    plane_tol_rel: float,
) -> np.ndarray:
    """Greedy agglomeration (cheapest border first) of the superpixels; returns the merged label map.

    Cost of merging a and b: the larger of (1) the distance of their mean Lab colours over their pooled
    texture and (2) how much stronger the colour contrast across their border is than inside either.
    With depth: infinite across a wall (their border is mostly a depth step), halved when one plane
    fits the disparities of both (rms within max(0.5 px, plane_tol_rel * disparity)).
    """
    n = int(labels.max()) + 1
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    channels = [lab[..., c].ravel().astype(np.float64) for c in range(3)]
    s1 = np.stack([np.bincount(flat, weights=ch, minlength=n) for ch in channels], axis=1)
    s2 = np.stack([np.bincount(flat, weights=ch * ch, minlength=n) for ch in channels], axis=1)
    inner = np.stack([graph.inner_length, graph.inner_contrast], axis=1)  # per region: pairs, summed |dLab|
    # per border (dict-of-dicts, both directions share one array): length, depth jumps, summed |dLab|
    border: list[dict[int, np.ndarray]] = [{} for _ in range(n)]
    for (a, b), ln, jp, ct in zip(
        graph.pairs.tolist(),
        graph.length.tolist(),
        graph.jumps.tolist(),
        graph.contrast.tolist(),
        strict=True,
    ):
        border[a][b] = border[b][a] = np.array([ln, jp, ct])
    parent = np.arange(n)
    version = np.zeros(n, dtype=np.int64)
    moments = _plane_moments(labels, log_d, n) if log_d is not None else None

    def cost(a: int, b: int) -> float:
        ln, jp, ct = border[a][b]
        if graph.depth_known and jp > _WALL_FRAC * ln:
            return np.inf
        mean_a, mean_b = s1[a] / count[a], s1[b] / count[b]
        pooled = count[a] + count[b]
        var = (s2[a] + s2[b]) / pooled - ((s1[a] + s1[b]) / pooled) ** 2
        texture = float(np.sqrt(max(var.sum(), 0.0)))
        means = float(np.linalg.norm(mean_a - mean_b)) / (1.0 + texture / _CONTRAST_LAB)
        inside = max(inner[a, 1] / max(inner[a, 0], 1.0), inner[b, 1] / max(inner[b, 0], 1.0))
        edge = max(ct / ln - inside, 0.0)
        scale = 1.0
        if moments is not None:
            rms, mean = _plane_rms(moments[a] + moments[b])
            if rms <= max(_PLANE_MIN_TOL_PX, plane_tol_rel * mean):
                scale = 0.5  # one plane explains both: evidence they are one surface
        return scale * max(means, edge)

    heap = [(cost(a, b), a, b, 0, 0) for a, b in graph.pairs.tolist()]
    heapq.heapify(heap)
    while heap:
        c, a, b, va, vb = heapq.heappop(heap)
        if c > threshold:
            break
        if parent[a] != a or parent[b] != b or version[a] != va or version[b] != vb:
            continue  # stale entry
        # merge b into a: their border becomes inside, b's other borders become a's
        parent[b] = a
        count[a] += count[b]
        s1[a] += s1[b]
        s2[a] += s2[b]
        if moments is not None:
            moments[a] += moments[b]
        shared = border[a].pop(b)
        inner[a] += inner[b] + shared[[0, 2]]
        version[a] += 1
        for k, stats in border[b].items():
            if k == a:
                continue
            del border[k][b]
            merged = border[a][k] + stats if k in border[a] else stats
            border[a][k] = border[k][a] = merged
        border[b] = {}
        for k in border[a]:
            lo, hi = min(a, k), max(a, k)
            heapq.heappush(heap, (cost(lo, hi), lo, hi, int(version[lo]), int(version[hi])))
    # resolve the union-find forest
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    _, compact = np.unique(root, return_inverse=True)
    return compact[labels]


def _proposals(
    regions: np.ndarray, graph: _Graph, *, full_size: tuple[int, int], config: ClassicalMasksConfig
) -> Masks:
    """Keep object-sized regions, score them, upsample them to the full image size."""
    h, w = full_size
    n = int(regions.max()) + 1
    area = np.bincount(regions.ravel(), minlength=n) / regions.size
    keep = np.flatnonzero((area >= config.min_area_frac) & (area <= config.max_area_frac))
    if keep.size == 0:
        return _empty(h, w)
    # per region, over all its neighbours: border length, colour contrast across it, and the share of it
    # where the region is in front of its neighbour by a depth jump (a figure, not ground)
    lo, hi = graph.pairs[:, 0], graph.pairs[:, 1]
    ends = graph.pairs.ravel()
    border = np.maximum(np.bincount(ends, weights=np.repeat(graph.length, 2), minlength=n), 1.0)
    across = np.bincount(ends, weights=np.repeat(graph.contrast, 2), minlength=n) / border
    inside = graph.inner_contrast / np.maximum(graph.inner_length, 1.0)
    in_front = (
        np.bincount(lo, weights=graph.front_lo, minlength=n)
        + np.bincount(hi, weights=graph.front_hi, minlength=n)
    ) / border
    colour = 1.0 - np.exp(-np.maximum(across - inside, 0.0) / _CONTRAST_LAB)  # border stronger than texture
    evidence = 1.0 - (1.0 - colour) * (1.0 - in_front)
    framed = 1.0 - graph.frame / (border + graph.frame)  # share of the outline inside the image
    if regions.shape != (h, w):
        regions = cv2.resize(regions.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    masks, scores = [], []
    for r in keep.tolist():
        m = regions == r
        if m.any():
            masks.append(m)
            score = evidence[r] * (0.5 + 0.5 * _solidity(m)) * (0.5 + 0.5 * framed[r])
            scores.append(float(np.clip(score, 0.0, 1.0)))
    if not masks:
        return _empty(h, w)
    order = np.argsort(-np.asarray(scores), kind="stable")
    s = np.asarray(scores, dtype=np.float32)[order]
    return Masks(masks=np.stack([masks[i] for i in order]), scores=s, stability=np.ones_like(s))


def _solidity(mask: np.ndarray) -> float:
    """Area over convex-hull area, in (0, 1]."""
    pts = cv2.findNonZero(mask.astype(np.uint8))
    hull = cv2.convexHull(pts)
    # the hull joins pixel centres: add half a pixel around it to compare with a pixel count
    hull_area = cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True) + 1.0
    return float(min(1.0, mask.sum() / hull_area))


def _empty(h: int, w: int) -> Masks:
    z = np.zeros(0, dtype=np.float32)
    return Masks(masks=np.zeros((0, h, w), dtype=bool), scores=z, stability=z.copy())
