"""`classical` masks: superpixels on colour + disparity edges, merged into instance proposals.

Which rule does what, and how well it scores: docs/classical.md.

1. Watershed superpixels at a working resolution (`work_max_side`), flooded from a grid of seeds over
   the gradient of (L*, a*, b*, w * log disparity) plus `compactness` x the distance to the nearest
   seed: their borders snap to colour edges and depth steps alike.
2. Greedy merging over the superpixel adjacency graph, cheapest pair first (labeler.segment.regions).
   Cost = the larger of the regions' mean-colour distance (over their texture) and their border's
   colour contrast in excess of their insides. A border along which the disparity steps by more than
   `depth_jump_rel` and 0.75 px (each side extrapolated along its own slope, so a crease is no step) is
   a wall: the two never merge. Where one plane fits both regions' disparities and adds little to their
   own planes' residuals, the cost is a tenth: a wall, a floor or a textured board is one region.
   After the merge, a border's pixel jumps count only where its mean step along the whole border is a
   jump too (matcher noise on a floor crosses the threshold pixel by pixel, a silhouette all along).
3. Strips (thinner than _STRIP_PX) join the neighbour they share the longest jump-free border with.
4. Regions over `max_area_frac` or under `min_area_frac` are dropped; with depth, so is every region
   that does not stand in front of its neighbours along _FIGURE_FRONT of its border (ground: walls,
   floors, blobs of them) and every thin region between two depths. Score = boundary evidence x
   compactness (solidity) x share of the outline inside the image. Stability is 1 (no such notion).

Speed: every per-pixel step is one vectorized pass (OpenCV or numpy) at the working size, and the
merge never returns to the pixels: it works on per-region sums (benchmarks/bench_classical.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from data_schema.backends import ClassicalMasksConfig
from labeler.segment.base import MASK_BACKENDS, MaskBackend, Masks, check_image
from labeler.segment.regions import (
    CONTRAST_LAB,
    RegionGraph,
    absorb_strips,
    border_stats,
    colour_steps,
    merge,
    region_sums,
    thickness,
)

_JUMP_LAB = 25.0  # Lab units the depth channel spans for one `depth_jump_rel` jump (at disparity_weight 1)
_FIGURE_FRONT = 0.25  # with depth, an object stands in front of its neighbours along this share of its border
_STRIP_PX = 6.0  # a region thinner than this (2 area / outline, working px) is a strip, not an object
_LEVELS_PER_LAB = 4.0  # the flooding sees the gradient in 1/4 Lab/px steps, up to 64 Lab/px (a wall)
_SRGB_LEVELS = np.arange(256) / 255.0
_SRGB_TO_LINEAR = np.where(
    _SRGB_LEVELS <= 0.04045, _SRGB_LEVELS / 12.92, ((_SRGB_LEVELS + 0.055) / 1.055) ** 2.4
).astype(np.float32)
_XYZ_FROM_RGB = np.array(  # linear sRGB -> CIE XYZ, D65
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=np.float32,
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_LAB_EPS = np.float32((6 / 29) ** 3)  # below it, f(t) is linear
_LAB_SLOPE = np.float32(1 / (3 * (6 / 29) ** 2))


@MASK_BACKENDS.register
class ClassicalMaskBackend(MaskBackend[ClassicalMasksConfig]):
    """Instance proposals from colour and disparity; CPU only, deterministic."""

    config_type = ClassicalMasksConfig
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
        planes = _lab_planes(small)
        steps = colour_steps(planes)
        log_d = None
        if disparity_px is not None and cfg.disparity_weight > 0:
            log_d = _log_disparity(disparity_px, size)
        jump = float(np.log1p(cfg.depth_jump_rel))
        labels = _superpixels(
            planes,
            steps,
            log_d,
            n_segments=cfg.n_segments,
            compactness=cfg.compactness,
            depth_scale=cfg.disparity_weight * _JUMP_LAB / jump,
        )
        graph = border_stats(labels, steps, log_d, jump=jump)
        sums = region_sums(labels, planes, log_d, len(graph.frame))
        root = merge(sums, graph, threshold=cfg.merge_threshold, plane_tol_rel=cfg.depth_jump_rel / 2)
        regions, graph = root[labels], graph.relabel(root)
        if graph.depth_known:
            # after the merge, when borders are long enough for their mean step to mean something
            graph = graph.without_noise_fronts()
            area = np.bincount(regions.ravel(), minlength=len(graph.frame)).astype(np.float64)
            root = absorb_strips(graph, area, min_thickness_px=_STRIP_PX)
            regions, graph = root[regions], graph.relabel(root)
        return _proposals(regions, graph, full_size=(h, w), config=cfg)


def _lab_planes(rgb: np.ndarray) -> list[np.ndarray]:
    """CIE L*, a*, b* (D65, 2 degree observer) of an sRGB uint8 image: three (h, w) float32 planes.

    In numpy rather than cv2.cvtColor, whose first Lab conversion in a process builds tables for ~0.25 s.
    """
    linear = _SRGB_TO_LINEAR[rgb]  # (h, w, 3) float32, by table: the input has 256 levels
    r, g, b = linear[..., 0], linear[..., 1], linear[..., 2]
    f = []
    for row, white in zip(_XYZ_FROM_RGB, _WHITE_D65, strict=True):
        t = (row[0] / white) * r + (row[1] / white) * g + (row[2] / white) * b
        f.append(np.where(t > _LAB_EPS, np.cbrt(t), t * _LAB_SLOPE + np.float32(4 / 29)))
    fx, fy, fz = f
    return [116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)]


def _superpixels(
    planes: list[np.ndarray],
    steps: tuple[np.ndarray, np.ndarray],
    log_d: np.ndarray | None,
    *,
    n_segments: int,
    compactness: float,
    depth_scale: float,
) -> np.ndarray:
    """Watershed from a grid of seeds on the colour + depth gradient; (h, w) int32 labels from 0.

    The gradient is |grad Lab| (Lab units/px) combined with depth_scale * |grad log d|, so a disparity
    jump of `depth_jump_rel` is a ridge as high as a _JUMP_LAB colour edge. `compactness` adds that many
    Lab/px per px of distance from the nearest seed, so flat areas split into compact cells. Seeds move
    to the lowest gradient in their 5x5 neighbourhood so none sits on an edge.
    """
    h, w = planes[0].shape
    g2 = np.zeros((h, w), np.float32)
    channels = list(planes)
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
    if compactness > 0:
        seeds = (markers == 0).astype(np.uint8)
        grad += np.float32(compactness) * cv2.distanceTransform(seeds, cv2.DIST_L2, cv2.DIST_MASK_5)
    labels = _flood(grad, markers, steps)
    present = np.bincount(labels.ravel()) > 0  # two seeds may land on one pixel
    return (np.cumsum(present) - 1).astype(np.int32)[labels]


def _flood(grad: np.ndarray, markers: np.ndarray, steps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Watershed of `grad` (h, w) from `markers` (h, w) int32 (0: unlabelled); every pixel labelled.

    OpenCV's flooding (a bucket queue over 256 levels, in C++) crosses a 4-adjacent pixel pair (p, q) at
    the priority max over channels of |I(p) - I(q)|. With the gradient, quantised to _LEVELS_PER_LAB
    levels per Lab/px, in channel 0 on one colour of a checkerboard and in channel 1 on the other (0
    elsewhere), that priority is max(g(p), g(q)): the flood crosses a pair at the height of its higher
    pixel, as a watershed of g does. The pixels OpenCV leaves on the lines where basins meet join the
    neighbouring basin of the most similar colour.
    """
    h, w = grad.shape
    level = np.minimum(grad * np.float32(_LEVELS_PER_LAB), 255).astype(np.uint8)
    image = np.zeros((h + 2, w + 2, 3), np.uint8)  # OpenCV marks the frame as a line: pad it away
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        image[1 + dy : h + 1 : 2, 1 + dx : w + 1 : 2, (dy + dx) % 2] = level[dy::2, dx::2]
    flooded = np.zeros((h + 2, w + 2), np.int32)
    flooded[1:-1, 1:-1] = markers
    cv2.watershed(image, flooded)
    # a line pixel joins its labelled 4-neighbour nearest in colour; on the padded map the neighbours of
    # an inner pixel are at flat offsets -1, +1, -W, +W, and the frame (-1) is never a candidate
    stride = w + 2
    labels = flooded.ravel()
    down, right = np.full((h + 2, w + 2), np.inf, np.float32), np.full((h + 2, w + 2), np.inf, np.float32)
    down[1:-2, 1:-1], right[1:-1, 1:-2] = steps  # |dLab| to the pixel below / on the right
    down, right = down.ravel(), right.ravel()
    ys, xs = np.nonzero(flooded[1:-1, 1:-1] <= 0)
    line = (ys + 1) * stride + xs + 1
    for _ in range(4):  # a line pixel may touch only other line pixels: a few rounds
        if line.size == 0:
            break
        nbr = np.stack([line - stride, line + stride, line - 1, line + 1])
        dist = np.stack([down[line - stride], down[line], right[line - 1], right[line]])
        cand = labels[nbr]
        dist[cand <= 0] = np.inf
        best = np.argmin(dist, axis=0)
        pick = cand[best, np.arange(line.size)]
        labels[line] = pick
        line = line[pick <= 0]
    labels = flooded[1:-1, 1:-1]
    return np.maximum(labels, 1)  # a pixel no round resolved (none seen so far) joins basin 1


def _log_disparity(disparity_px: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """log disparity at the working size (w, h), holes filled from the nearest valid pixel.

    Each working pixel averages log d over the valid (finite, > 0) full-size pixels it covers, so the
    fill never leaks into pixels that saw any match; only working pixels with none take the nearest
    valid working pixel's value.
    """
    d = np.asarray(disparity_px, dtype=np.float32)
    valid = (d > 0) & (d < np.inf)  # NaN compares false
    if not valid.any():
        return None
    log_d: np.ndarray = np.log(np.where(valid, d, np.float32(1)))  # 0 where invalid
    weight: np.ndarray = valid.astype(np.float32)
    if (d.shape[1], d.shape[0]) != size:
        log_d = cv2.resize(log_d, size, interpolation=cv2.INTER_AREA)
        weight = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    seen = weight > 1e-3
    log_d = log_d / np.where(seen, weight, np.float32(1))
    if not seen.all():
        # label of the nearest seen pixel; DIST_LABEL_PIXEL numbers seen pixels 1.. in raster order
        _, nearest = cv2.distanceTransformWithLabels(
            (~seen).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        log_d = log_d.ravel()[np.flatnonzero(seen)[nearest.ravel() - 1]].reshape(seen.shape)
    return log_d.astype(np.float32)


def _proposals(
    regions: np.ndarray, graph: RegionGraph, *, full_size: tuple[int, int], config: ClassicalMasksConfig
) -> Masks:
    """Keep object-sized regions, score them, upsample them to the full image size."""
    h, w = full_size
    n = int(regions.max()) + 1
    area = np.bincount(regions.ravel(), minlength=n) / regions.size
    keep = (area >= config.min_area_frac) & (area <= config.max_area_frac)
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
    if graph.depth_known:  # a surface that stands in front of nothing (wall, floor, a blob of them) is ground
        keep &= in_front >= _FIGURE_FRONT
        behind = (
            np.bincount(lo, weights=graph.front_hi, minlength=n)
            + np.bincount(hi, weights=graph.front_lo, minlength=n)
        ) / border
        # a strip between two depths (in front of one side, behind the other) is a border artefact
        keep &= ~((thickness(graph, area * regions.size) < _STRIP_PX) & (behind >= _FIGURE_FRONT))
    if not keep.any():
        return _empty(h, w)
    colour = 1.0 - np.exp(-np.maximum(across - inside, 0.0) / CONTRAST_LAB)  # border stronger than texture
    evidence = 1.0 - (1.0 - colour) * (1.0 - in_front)
    framed = 1.0 - graph.frame / (border + graph.frame)  # share of the outline inside the image
    full = regions
    if regions.shape != (h, w):
        full = cv2.resize(regions.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)
    full_area = np.bincount(full.ravel(), minlength=n)
    keep &= full_area > 0  # a sliver the upsampling missed
    ids = np.flatnonzero(keep)
    solidity = _solidity(regions, ids, full_area, scale=(w / regions.shape[1], h / regions.shape[0]))
    scores = np.clip(evidence[ids] * (0.5 + 0.5 * solidity) * (0.5 + 0.5 * framed[ids]), 0.0, 1.0)
    order = np.argsort(-scores, kind="stable")
    # one pass over the full-size label map scatters every kept region into its own mask
    offset = np.full(n, -1, dtype=np.int64)
    offset[ids[order]] = np.arange(len(ids)) * (h * w)
    at = offset[full.ravel()]
    pixels = np.flatnonzero(at >= 0)
    masks = np.zeros(len(ids) * h * w, dtype=bool)
    masks[at[pixels] + pixels] = True
    s = scores[order].astype(np.float32)
    return Masks(masks=masks.reshape(-1, h, w), scores=s, stability=np.ones_like(s))


def _solidity(
    regions: np.ndarray, ids: np.ndarray, full_area: np.ndarray, *, scale: tuple[float, float]
) -> np.ndarray:
    """Per region in `ids`: its full-size pixel count over the area of the convex hull of its pixels.

    The hull is of the pixels as squares, at the working size scaled to full size, so a full rectangle
    has solidity 1; the corners of each row run of a region are enough for its hull. Clipped to 1.
    """
    h, w = regions.shape
    starts = np.ones((h, w), bool)
    starts[:, 1:] = regions[:, 1:] != regions[:, :-1]
    ends = np.ones((h, w), bool)
    ends[:, :-1] = starts[:, 1:]
    ys, x0 = np.nonzero(starts)  # runs in raster order: the k-th start and the k-th end are one run's
    x1 = np.nonzero(ends)[1] + 1
    run_label = regions[ys, x0]
    order = np.argsort(run_label, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(run_label, minlength=int(regions.max()) + 1))])
    # four corners per run, runs grouped by region: (4 * runs, 2) float32 at full-size scale
    corners = np.stack(
        [np.stack([x0, x1, x0, x1], axis=1), np.stack([ys, ys, ys + 1, ys + 1], axis=1)], axis=2
    )[order].reshape(-1, 2) * np.asarray(scale, dtype=np.float32)
    corners = corners.astype(np.float32)
    out = np.ones(len(ids))
    for i, r in enumerate(ids.tolist()):
        hull_area = cv2.contourArea(cv2.convexHull(corners[4 * bounds[r] : 4 * bounds[r + 1]]))
        out[i] = min(1.0, full_area[r] / max(hull_area, 1.0))
    return out


def _empty(h: int, w: int) -> Masks:
    z = np.zeros(0, dtype=np.float32)
    return Masks(masks=np.zeros((0, h, w), dtype=bool), scores=z, stability=z.copy())
