"""Region adjacency graphs of label maps, and their greedy agglomeration (for the classical mask backend).

Everything a merge decision needs is a sum over pixels or over 4-adjacent pixel pairs: border length,
colour contrast and depth jumps per adjacent pair of regions; pixel count, colour sums and squares, inner
contrast and plane-fit moments per region. Sums of a merged region are the sums of its parts, so the
merge never goes back to the pixels: each decision is a closed-form update of a few floats.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

_PROBE_PX = 2  # depth is compared this many px either side of a border
_WALL_FRAC = 0.3  # a border is a wall when this share of it is a depth jump
_MIN_JUMP_PX = 0.75  # the least disparity step (px) that counts as a depth jump, however far the surface
PLANE_DISCOUNT = 0.1  # the merge cost of two regions one plane fits is this share of their colour cost
_PLANE_MIN_TOL_PX = 0.5  # rms (px) of a plane fit that still counts as one surface (or plane_tol_rel x d)
# two regions are one surface only when their union's plane adds at most this share of that tolerance (rms)
# to the residuals of their own planes: two boards side by side at a small depth step fit one tilted
# plane within the tolerance, but only by adding the step's share to the residual
_PLANE_JOIN_SHARE = 0.33
# a border's pixel jumps count only when its mean step (signed, over the whole border) reaches this many
# times the jump threshold: 1.25 keeps every object of the rendered rooms and drops most floor bands of
# the demo sequence (1.5 drops them all but loses an occluded board; benchmarks/RESULTS.md, issue 27)
_MEAN_JUMP_SHARE = 1.25
_SMOOTH_MAX = 0.02  # |grad log d| per px above which a pixel sits on a depth step
CONTRAST_LAB = 20.0  # colour contrast (Lab) of a border over its region's texture: evidence 1 - 1/e


@dataclass(frozen=True)
class RegionGraph:
    """Borders of a label map.

    Per adjacent label pair `pairs[i] = (a, b)`, a < b: border length (4-adjacent pixel pairs), summed
    colour contrast |dLab| across it, and how many of its pixel pairs see a depth jump with `a` in
    front (`front_lo`) or `b` in front (`front_hi`). Per label: summed colour contrast and count of the
    pixel pairs inside it (its texture), and its pixels on the image frame.
    """

    pairs: np.ndarray  # (E, 2) int64
    length: np.ndarray  # (E,) float
    contrast: np.ndarray  # (E,) float, Lab units summed over the border
    front_lo: np.ndarray  # (E,) float
    front_hi: np.ndarray  # (E,) float
    hi_nearer: np.ndarray  # (E,) float, log-disparity steps summed over the border, > 0: b nearer
    least: np.ndarray  # (E,) float, the jump threshold summed over the border (log disparity)
    inner_length: np.ndarray  # (N,) float
    inner_contrast: np.ndarray  # (N,) float
    frame: np.ndarray  # (N,) float
    depth_known: bool

    @property
    def jumps(self) -> np.ndarray:
        return self.front_lo + self.front_hi

    def without_noise_fronts(self) -> RegionGraph:
        """The graph with no depth jump on a border whose mean step is under _MEAN_JUMP_SHARE x the jump
        threshold.

        Pixel by pixel, a matcher's noise on a smooth surface (a floor seen at a grazing angle) crosses
        the threshold here and there, and superpixel borders snap to exactly those places; along a
        whole border the noise averages out while a silhouette's step does not.
        """
        flat = np.abs(self.hi_nearer) < _MEAN_JUMP_SHARE * self.least
        zero = np.zeros_like(self.front_lo)
        return replace(
            self, front_lo=np.where(flat, zero, self.front_lo), front_hi=np.where(flat, zero, self.front_hi)
        )

    def relabel(self, root: np.ndarray) -> RegionGraph:
        """The graph of the label map `root[labels]` (root: (N,) new ids 0..M-1), from the sums alone.

        Borders between parts of one new region become its inside; borders between two new regions add
        up, with the in-front counts swapped where the order of the pair flips.
        """
        m = int(root.max()) + 1
        a, b = root[self.pairs[:, 0]], root[self.pairs[:, 1]]
        same = a == b
        inner_length = np.bincount(root, weights=self.inner_length, minlength=m)
        inner_length += np.bincount(a[same], weights=self.length[same], minlength=m)
        inner_contrast = np.bincount(root, weights=self.inner_contrast, minlength=m)
        inner_contrast += np.bincount(a[same], weights=self.contrast[same], minlength=m)
        keep = ~same
        a, b = a[keep], b[keep]
        flip = a > b
        lo_front = np.where(flip, self.front_hi[keep], self.front_lo[keep])
        hi_front = np.where(flip, self.front_lo[keep], self.front_hi[keep])
        hi_nearer = np.where(flip, -self.hi_nearer[keep], self.hi_nearer[keep])
        uniq, inv = np.unique(np.minimum(a, b) * m + np.maximum(a, b), return_inverse=True)
        e = len(uniq)
        return RegionGraph(
            pairs=np.stack([uniq // m, uniq % m], axis=1),
            length=np.bincount(inv, weights=self.length[keep], minlength=e),
            contrast=np.bincount(inv, weights=self.contrast[keep], minlength=e),
            front_lo=np.bincount(inv, weights=lo_front, minlength=e),
            front_hi=np.bincount(inv, weights=hi_front, minlength=e),
            hi_nearer=np.bincount(inv, weights=hi_nearer, minlength=e),
            least=np.bincount(inv, weights=self.least[keep], minlength=e),
            inner_length=inner_length,
            inner_contrast=inner_contrast,
            frame=np.bincount(root, weights=self.frame, minlength=m),
            depth_known=self.depth_known,
        )


def depth_steps(log_d: np.ndarray, axis: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The log-disparity step across the pixel pairs ((ys, xs), next along `axis`) that neither side's slope
    explains.

    Each side is read _PROBE_PX px out (so a jump the matcher blurred over a few pixels still counts) and
    extrapolated back to the border along its own slope (measured over the next 2 x _PROBE_PX px out):
    a slanted floor is continuous, and so is a crease where two surfaces meet (the floor and the wall,
    a board standing on the floor), while an object's silhouette is not. The slopes only ever explain a
    step away, never make or enlarge one: a slope probe that reaches across a nearby silhouette sees
    that silhouette, not the surface. Probes past the image edge read the edge pixel. Positive where
    the far side (higher index) is nearer.
    """
    p = _PROBE_PX
    q = 2 * p  # slope baseline
    last = log_d.shape[axis] - 1
    i = ys if axis == 0 else xs

    def at(offset: int) -> np.ndarray:  # log_d at offset along `axis` from the pair's first pixel
        j = np.minimum(np.maximum(i + offset, 0), last)
        return log_d[j, xs] if axis == 0 else log_d[ys, j]

    before, after = at(-p), at(1 + p)
    slope_before = (before - at(-p - q)) / q
    slope_after = (at(1 + p + q) - after) / q
    raw = after - before
    slopes = (slope_before + slope_after) * (p + 0.5)  # what the two surfaces' own slopes account for
    explained = np.where(np.sign(slopes) == np.sign(raw), np.minimum(np.abs(slopes), np.abs(raw)), 0.0)
    return raw - np.sign(raw) * explained


def colour_steps(planes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """|dLab| between 4-adjacent pixels of the (h, w) L*, a*, b* planes: to the pixel below (h-1, w)
    and to the pixel on the right (h, w-1)."""

    def norm(d: list[np.ndarray]) -> np.ndarray:
        return np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])

    return norm([c[1:] - c[:-1] for c in planes]), norm([c[:, 1:] - c[:, :-1] for c in planes])


def border_stats(
    labels: np.ndarray, steps: tuple[np.ndarray, np.ndarray], log_d: np.ndarray | None, *, jump: float
) -> RegionGraph:
    """Border and texture statistics of a label map, vectorized over 4-adjacent pixel pairs.

    Args:
        labels: (h, w) int labels 0..N-1.
        steps: colour_steps of the image.
        log_d: (h, w) float32 log disparity (of disparities in px) with no hole, or None.
        jump: log-disparity step that counts as a depth jump (and at least _MIN_JUMP_PX of disparity).
    """
    n = int(labels.max()) + 1
    keys, contrasts, lo_front, hi_front, hi_nearer, leasts = [], [], [], [], [], []
    inner_len = np.zeros(n)
    inner_con = np.zeros(n)
    for axis, diff in enumerate(steps):
        a = (labels[:-1] if axis == 0 else labels[:, :-1]).ravel()
        b = (labels[1:] if axis == 0 else labels[:, 1:]).ravel()
        diff = diff.ravel()
        cross = np.flatnonzero(a != b)
        ca, cb, cd = a[cross].astype(np.int64), b[cross].astype(np.int64), diff[cross]
        # pairs inside a label = all pairs headed by it less those that cross
        inner_len += np.bincount(a, minlength=n) - np.bincount(ca, minlength=n)
        inner_con += np.bincount(a, weights=diff, minlength=n) - np.bincount(ca, weights=cd, minlength=n)
        keys.append(np.minimum(ca, cb) * n + np.maximum(ca, cb))
        contrasts.append(cd)
        if log_d is not None:
            ys, xs = np.divmod(cross, labels.shape[1] - axis)
            step = depth_steps(log_d, axis, ys, xs)
            # a jump is relative, but never under _MIN_JUMP_PX: far surfaces (a few px of disparity)
            # would otherwise see the matcher's noise as jumps
            far = np.exp(np.minimum(log_d[ys, xs], log_d[ys + 1 - axis, xs + axis]))
            least = np.maximum(jump, np.log1p(_MIN_JUMP_PX / far))
            tail_front, head_front = step > least, step < -least
            tail_is_hi = cb > ca
            lo_front.append(np.where(tail_is_hi, head_front, tail_front))
            hi_front.append(np.where(tail_is_hi, tail_front, head_front))
            hi_nearer.append(np.where(tail_is_hi, step, -step))
            leasts.append(least)
    uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
    e = len(uniq)

    def per_pair(parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros(e)
        return np.bincount(inv, weights=np.concatenate(parts).astype(np.float64), minlength=e)

    frame = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    return RegionGraph(
        pairs=np.stack([uniq // n, uniq % n], axis=1),
        length=np.bincount(inv, minlength=e).astype(np.float64),
        contrast=per_pair(contrasts),
        front_lo=per_pair(lo_front),
        front_hi=per_pair(hi_front),
        hi_nearer=per_pair(hi_nearer),
        least=per_pair(leasts),
        inner_length=inner_len,
        inner_contrast=inner_con,
        frame=np.bincount(frame, minlength=n).astype(np.float64),
        depth_known=log_d is not None,
    )


def region_sums(labels: np.ndarray, planes: list[np.ndarray], log_d: np.ndarray | None, n: int) -> np.ndarray:
    """Per label, the pixel sums the merge costs need: (n, 5) or, with depth, (n, 15) float64.

    Columns: pixel count; sums of L, a, b; sum of L^2 + a^2 + b^2; then the plane moments of disparity
    d over the normalised pixel position (x, y) in [0, 1): count, x, y, d, xx, xy, yy, xd, yd, dd.
    Only pixels of smooth depth enter the plane moments: those next to a depth step (edges, filled
    holes) would let a few outliers decide whether two regions are one surface.
    """
    flat = labels.ravel()
    cols: list[np.ndarray] = [np.bincount(flat, minlength=n).astype(np.float64)]
    cols += [np.bincount(flat, weights=c.ravel(), minlength=n) for c in planes]
    squares = sum(np.square(c, dtype=np.float64) for c in planes)
    cols.append(np.bincount(flat, weights=np.ravel(squares), minlength=n))
    if log_d is not None:
        h, w = labels.shape
        gx, gy = cv2.Sobel(log_d, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(log_d, cv2.CV_32F, 0, 1, ksize=3)
        rough = cv2.dilate((np.hypot(gx, gy) / 8 > _SMOOTH_MAX).astype(np.uint8), np.ones((5, 5), np.uint8))
        one = (rough == 0).ravel().astype(np.float64)  # weight 1 on smooth pixels, 0 elsewhere
        x = np.broadcast_to(np.arange(w) / w, (h, w)).ravel()
        y = np.repeat(np.arange(h) / h, w)
        d = np.exp(log_d.ravel().astype(np.float64))
        ox, oy, od = one * x, one * y, one * d
        for t in (one, ox, oy, od, ox * x, ox * y, oy * y, ox * d, oy * d, od * d):
            cols.append(np.bincount(flat, weights=t, minlength=n))
    return np.stack(cols, axis=1)


def plane_sse(m: list[float]) -> float:
    """Summed squared residual (px^2) of the least-squares plane d = a x + b y + c through plane moments
    `m` (the last 10 columns of region_sums, or sums of them).

    The fit is on centred sums (a 2 x 2 solve); collinear pixels fit along their line, and fewer than
    three pixels fit any plane (0).
    """
    n, sx, sy, sd, sxx, sxy, syy, sxd, syd, sdd = m
    if n < 3:
        return 0.0
    cxx, cxy, cyy = sxx - sx * sx / n, sxy - sx * sy / n, syy - sy * sy / n
    cxd, cyd, cdd = sxd - sx * sd / n, syd - sy * sd / n, sdd - sd * sd / n
    det = cxx * cyy - cxy * cxy
    if det > 1e-9 * cxx * cyy:
        explained = (cyy * cxd * cxd - 2.0 * cxy * cxd * cyd + cxx * cyd * cyd) / det
    else:  # rank one: C = s u u^T with s its trace; the fit along u explains (c^T C c) / s^2
        s = cxx + cyy
        explained = (cxx * cxd * cxd + 2.0 * cxy * cxd * cyd + cyy * cyd * cyd) / (s * s) if s > 0 else 0.0
    return max(cdd - explained, 0.0)


def merge(sums: np.ndarray, graph: RegionGraph, *, threshold: float, plane_tol_rel: float) -> np.ndarray:
    """Greedy agglomeration, cheapest border first; returns root: (N,) merged region id (0..M-1) per label.

    Cost of merging a and b: the larger of (1) the distance of their mean Lab colours over their pooled
    texture and (2) how much stronger the colour contrast across their border is than inside either.
    With depth: infinite across a wall (their border is mostly a depth step), halved when one plane
    fits the disparities of both (rms within max(0.5 px, plane_tol_rel * disparity)).

    A priority queue of border costs with lazy invalidation: a merge bumps the version of the region it
    grows, which retires every queued border of it; its borders are queued anew at their new cost. The
    plane test is lazy too: a border is queued at half its colour cost (a lower bound) and the plane is
    fitted only when it comes first: one plane, and that is its cost and it merges now; none, and it is
    queued again at its full cost. Costs above the threshold are never queued (they can only change
    when an end merges, and are then redone). Everything is plain Python floats: a cost is a few dozen
    float operations, where numpy calls on scalars would cost more than the arithmetic.
    """
    n = len(sums)
    with_plane = sums.shape[1] > 5
    region, border = _region_stats(sums, graph), _borders(graph, n)
    inner_len, inner_con = graph.inner_length.tolist(), graph.inner_contrast.tolist()
    moments: list[list[float]] = sums[:, 5:].tolist()  # plane moments; a merged-away region's: []
    walls = graph.depth_known
    wall_frac, contrast, min_tol, sqrt = _WALL_FRAC, CONTRAST_LAB, _PLANE_MIN_TOL_PX, math.sqrt
    join = _PLANE_JOIN_SHARE
    # the key a border is queued at: its cost, or half its colour cost while its plane is untested
    key_scale = PLANE_DISCOUNT if with_plane else 1.0

    version = [0] * n
    heap: list[tuple[float, int, int, int, int, bool]] = []  # (key, a, b, versions, key is the cost), a < b
    push, pop = heapq.heappush, heapq.heappop
    exact = not with_plane  # without depth a queued key is the cost itself

    def queue(a: int, above: int) -> None:
        """Queue the borders of region a to neighbours k > above at their keys (the colour cost, halved
        while the plane is untested), unless a wall or over the threshold. One loop with a's stats
        unpacked once: this is the merge's inner loop."""
        na, qa, la, aa, ba, ia = region[a]
        va = version[a]
        for k, (ln, jp, ct) in border[a].items():
            if k <= above or (walls and jp > wall_frac * ln):
                continue
            nk, qk, lk, ak, bk, ik = region[k]
            edge = ct / ln - (ia if ia > ik else ik)
            if edge * key_scale > threshold:
                continue  # the mean-colour term cannot lower it
            dl, da, db = la - lk, aa - ak, ba - bk
            d2 = dl * dl + da * da + db * db
            nak = na + nk
            texture = sqrt((qa + qk + na * nk / nak * d2) / nak)  # rms colour spread of the union
            means = sqrt(d2) / (1.0 + texture / contrast)
            key = key_scale * (means if means > edge else edge)
            if key <= threshold:
                push(
                    heap, (key, a, k, va, version[k], exact) if a < k else (key, k, a, version[k], va, exact)
                )

    def one_plane(a: int, b: int) -> bool:
        """Whether one plane fits the disparities of both: rms within tol = max(min_tol, plane_tol_rel * d),
        and the rms the union adds to the two regions' own planes within tol * _PLANE_JOIN_SHARE."""
        m = [x + y for x, y in zip(moments[a], moments[b], strict=True)]
        if m[0] < 3:
            return True
        tol = max(min_tol, plane_tol_rel * m[3] / m[0])
        sse = plane_sse(m)
        if sse > tol * tol * m[0]:
            return False
        added = sse - plane_sse(moments[a]) - plane_sse(moments[b])
        return added <= (join * tol) ** 2 * m[0]

    for a in range(n):
        queue(a, a)
    parent = list(range(n))
    while heap:
        key, a, b, va, vb, final = pop(heap)
        if version[a] != va or version[b] != vb or parent[a] != a or parent[b] != b:
            continue  # stale: an end has merged since this cost was queued
        if not final and not one_plane(a, b):
            if key / key_scale <= threshold:
                push(heap, (key / key_scale, a, b, va, vb, True))
            continue
        if len(border[b]) > len(border[a]):
            a, b = b, a  # fold the region with fewer borders into the other
        parent[b] = a
        nbr_a = border[a]
        shared = nbr_a.pop(b)
        inner_len[a] += inner_len[b] + shared[0]
        inner_con[a] += inner_con[b] + shared[2]
        na, qa, la, aa, ba, _ = region[a]
        nb, qb, lb, ab, bb, _ = region[b]
        nab = na + nb
        dl, da, db = la - lb, aa - ab, ba - bb
        region[a] = (
            nab,
            qa + qb + na * nb / nab * (dl * dl + da * da + db * db),
            (na * la + nb * lb) / nab,
            (na * aa + nb * ab) / nab,
            (na * ba + nb * bb) / nab,
            inner_con[a] / max(inner_len[a], 1.0),
        )
        moments[a], moments[b] = [x + y for x, y in zip(moments[a], moments[b], strict=True)], []
        for k, e in border[b].items():
            if k == a:
                continue
            del border[k][b]
            if k in nbr_a:
                both = nbr_a[k]
                both[0] += e[0]
                both[1] += e[1]
                both[2] += e[2]
            else:
                nbr_a[k] = border[k][a] = e
        border[b] = {}
        version[a] += 1
        queue(a, -1)
    return _compact_roots(parent)


def _region_stats(sums: np.ndarray, graph: RegionGraph) -> list[tuple[float, ...]]:
    """Per region: (pixels, colour scatter sum |x - mean|^2, mean L, a, b, mean inner contrast); a merged
    region's follow in closed form (scatter of a union = both scatters + na nb / n |mean_a - mean_b|^2)."""
    count, s_l, s_a, s_b, squares = (sums[:, c] for c in range(5))
    scatter = np.maximum(squares - (s_l * s_l + s_a * s_a + s_b * s_b) / count, 0.0)
    return list(
        zip(
            count.tolist(),
            scatter.tolist(),
            (s_l / count).tolist(),
            (s_a / count).tolist(),
            (s_b / count).tolist(),
            (graph.inner_contrast / np.maximum(graph.inner_length, 1.0)).tolist(),
            strict=True,
        )
    )


def _borders(graph: RegionGraph, n: int) -> list[dict[int, list[float]]]:
    """Per region, its neighbours' borders: [length, depth-jump length, contrast sum]."""
    border: list[dict[int, list[float]]] = [{} for _ in range(n)]
    for (a, b), ln, jp, ct in zip(
        graph.pairs.tolist(),
        graph.length.tolist(),
        graph.jumps.tolist(),
        graph.contrast.tolist(),
        strict=True,
    ):
        border[a][b] = border[b][a] = [ln, jp, ct]  # one list per border, shared by both ends
    return border


def _compact_roots(parent: list[int]) -> np.ndarray:
    """The union-find forest resolved: each label's merged region id, numbered 0..M-1."""
    root = np.asarray(parent)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    kept = np.zeros(len(parent), bool)
    kept[root] = True
    return (np.cumsum(kept) - 1)[root]


def thickness(graph: RegionGraph, area_px: np.ndarray) -> np.ndarray:
    """Per region, 2 x area / outline (its border and its pixels on the image frame), in px: about the
    width of a strip, about a third of the side of a square."""
    n = len(area_px)
    border = np.bincount(graph.pairs.ravel(), weights=np.repeat(graph.length, 2), minlength=n)
    return 2.0 * area_px / np.maximum(border + graph.frame, 1.0)


def absorb_strips(graph: RegionGraph, area_px: np.ndarray, *, min_thickness_px: float) -> np.ndarray:
    """Strips join their surface: root (N,) new ids 0..M-1, as `merge` returns them.

    A region thinner than `min_thickness_px` (`thickness`) joins the neighbour it shares the longest
    border with among those it has no wall with (a wall: _WALL_FRAC of the border is a depth jump) and
    that are not thin themselves: a band the matcher left along an object's edge joins the object, an
    occlusion shadow filled with the background's depth joins the background. A thin region walled off
    from every neighbour (a pole in front of a wall) stays.
    """
    n = len(area_px)
    thin = thickness(graph, area_px) < min_thickness_px
    open_border = graph.jumps <= _WALL_FRAC * graph.length
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    region = np.concatenate([a, b])
    other = np.concatenate([b, a])
    length = np.concatenate([graph.length, graph.length])
    ok = np.concatenate([open_border, open_border]) & thin[region] & ~thin[other]
    region, other, length = region[ok], other[ok], length[ok]
    order = np.lexsort((-length, region))  # by region, longest border first
    region, other = region[order], other[order]
    first = np.ones(len(region), bool)
    first[1:] = region[1:] != region[:-1]
    root = np.arange(n)
    root[region[first]] = other[first]
    kept = np.zeros(n, bool)
    kept[root] = True
    return (np.cumsum(kept) - 1)[root]
