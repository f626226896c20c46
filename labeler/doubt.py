"""Doubt: where a pseudo-label is most likely wrong. Signals per object and per sample, and one score.

Signals (columns of the tables; `None` where a signal does not apply):

| signal                 | of      | made by         | meaning                                         |
|------------------------|---------|-----------------|-------------------------------------------------|
| `confidence_mean`      | sample  | stereo backend  | mean stereo confidence of valid pixels          |
| `valid_depth_fraction` | sample  | labelling       | share of pixels with valid depth                |
| `valid_fraction`       | object  | labelling       | share of the object's pixels with valid depth   |
| `depth_m_p10`, `_p90`  | object  | labelling       | a wide spread: a mask across surfaces           |
| `area_px`              | object  | labelling       | small masks are often fragments                 |
| `thickness_px`         | object  | labelling       | thin masks (a few px wide): edge slivers        |
| `edge_alignment`       | object  | labelling       | share of the outline on a depth edge; masks     |
|                        |         |                 | whose edges miss depth edges cut surfaces       |
| `mono_disagreement`    | both    | `labeler doubt` | share of pixels whose surface normals from the  |
|                        |         | with a model    | stereo and a monocular model differ by > 30°    |
| `temporal_instability` | sample  | `labeler doubt` | video: median relative depth change of static   |
|                        |         |                 | pixels against the neighbouring frame           |
| `track_depth_jump_per_s` | object | read from the  | `--track`: the largest relative change of the   |
|                        |         | tables          | track's median depth to its previous or next    |
|                        |         |                 | labelled frame, per second (ln(z_b / z_a) / dt) |

The combined score maps each signal to a term in [0, 1] and averages the terms that are
present, with equal weights:

    object doubt = mean(spread, shape, edges, holes, mono)
        spread = min(1, ln(p90 / p10) / ln 1.5)          p90 half as far again as p10 -> 1
        shape  = max(small, thin); small = max(0, 1 - area_px / (0.5% of the image)),
                 thin = clip(1 - (thickness_px - 1) / 15, 0, 1)     1 px wide -> 1, 16 px -> 0
        edges  = 1 - edge_alignment
        holes  = 1 - valid_fraction
        mono   = mono_disagreement
        jump   = min(1, track_depth_jump_per_s / 2.0)    the median depth changing 20% in 0.1 s -> 1
    sample doubt = mean(confidence, holes, mono, flicker, objects)
        confidence = 1 - confidence_mean
        holes      = 1 - valid_depth_fraction
        mono       = mono_disagreement
        flicker    = min(1, temporal_instability / 0.05)           5% depth change of static pixels -> 1
        objects    = the largest object doubt of the sample

Signals that need a model (mono) or neighbouring frames (flicker) are absent from sgbm / classical runs
and single images; their terms then simply drop out of the mean, so scores of one dataset stay
comparable sample to sample. So does `jump` for untracked objects, a track seen once, and frames without
a timestamp.

A track whose jump term reaches 1 on any frame is flagged (`track_jumps`): a real object does not change
its distance by a fifth in a tenth of a second, a track that took over another object, or a mask that
bled onto the wall behind, does. `jump` is derived from the tables when they are read (the objects'
`track_id` and `depth_m_median`, the samples' `timestamp_s`), like `spread` and `shape`: it needs no
arrays, so no `labeler doubt` pass, and it follows the tables when a track is relabelled. Readers that
go shard by shard (the exports) take it from the whole objects table first (four columns), since a
track's other frames may sit in other shards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

DEPTH_EDGE_REL = 0.05  # a relative depth step larger than this between neighbours is a depth edge
EDGE_REACH_PX = 2  # an outline pixel within this distance of a depth edge follows it
NORMAL_ANGLE_DEG = 30.0  # stereo and monocular normals further apart than this disagree (as FFS's filter)
NORMAL_SMOOTH_PX = 5  # box filter over valid depth before the normals (SGBM noise would dominate them)
STATIC_GREY = 3.0  # a pixel whose blurred grey value changes less than this between frames is static
MIN_STATIC_SHARE = 0.05  # fewer static pixels with depth than this share of the image: no signal
SPREAD_FULL = 1.5  # p90 / p10 at which the spread term reaches 1
SMALL_SHARE = 0.005  # objects below this share of the image get a `small` term
THIN_FULL_PX = 16.0  # thickness at which the `thin` term reaches 0
FLICKER_FULL = 0.05  # temporal instability at which the flicker term reaches 1
TRACK_JUMP_FULL = (
    2.0  # relative depth change per second at which the jump term reaches 1: the track is flagged
)
TRACK_MIN_GAP_S = 0.1  # frames closer in time are compared as if this far apart (stereo noise at high fps)
TRACK_JUMP = "track_depth_jump_per_s"  # the signal's column (objects, as the review reads them)

OBJECT_TERMS = ("spread", "shape", "edges", "holes", "mono", "jump")
SAMPLE_TERMS = ("confidence", "holes", "mono", "flicker", "objects")
VIDEO_FRAME = re.compile(
    r"^(?P<video>.+)_f(?P<frame>\d{6})$"
)  # labeler/rig/captures.py names video frames so


# ------------------------------------------------------------------------------ per-object signals


def outline(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: object pixels with a 4-neighbour of another id (the image border is not an outline)."""
    p = np.pad(ids, 1, mode="edge")
    c = p[1:-1, 1:-1]
    other = (p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)
    return other & (c > 0)


def depth_edges(depth_m: np.ndarray, *, rel_step: float = DEPTH_EDGE_REL) -> tuple[np.ndarray, np.ndarray]:
    """Depth edges and where they can be seen.

    Returns:
        edges (H, W) bool: a 3x3 window holds valid and invalid depth (an occlusion or the matcher's
        hole border), or its valid depths differ by more than `rel_step` relatively;
        seen (H, W) bool: the 3x3 window holds any valid depth.
    """
    import cv2

    k = np.ones((3, 3), np.uint8)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    v8 = valid.astype(np.uint8)
    any_valid = cv2.dilate(v8, k).astype(bool)
    all_valid = cv2.erode(v8, k, borderType=cv2.BORDER_REPLICATE).astype(bool)
    hi = cv2.dilate(np.where(valid, depth_m, 0).astype(np.float32), k)
    lo = cv2.erode(np.where(valid, depth_m, np.inf).astype(np.float32), k)
    # erode pads the image with FLT_MAX, so an invalid region on the border (the Motorcycle pair's left
    # columns) has lo = FLT_MAX there, and FLT_MAX * 1.05 overflows. Those windows are not all valid, so
    # they are no step: leave them out of the product (the windows that are keep the same arithmetic).
    lo = np.where(all_valid, lo, np.float32(0))
    step = all_valid & (hi > lo * (1 + rel_step))
    return (any_valid & ~all_valid) | step, any_valid


def max_per_id(flat_ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """(n + 1,) float64: the largest non-negative value of each id (0 where it has none). A stable sort of
    the pixels with a positive value (a radix sort for uint16 ids) and one `maximum.reduceat`: about 10x
    faster than `np.maximum.at` over every pixel."""
    out = np.zeros(n + 1, np.float64)
    keep = np.flatnonzero(values > 0)
    if keep.size == 0:
        return out
    order = np.argsort(flat_ids[keep], kind="stable")
    ids_sorted, vals = flat_ids[keep][order], values[keep][order]
    starts = np.flatnonzero(np.r_[True, ids_sorted[1:] != ids_sorted[:-1]])
    out[ids_sorted[starts]] = np.maximum.reduceat(vals, starts)
    return out


def shape_signals(ids: np.ndarray, depth_m: np.ndarray) -> dict[int, tuple[float, float | None]]:
    """`thickness_px` and `edge_alignment` of every object of an id map (see the module docstring).

    Args:
        ids: (H, W) uint16 instance ids, 0 = no object.
        depth_m: (H, W) float32 depth, NaN invalid.

    Returns:
        {id: (thickness_px, edge_alignment or None)} for the ids present.
    """
    import cv2

    n = int(ids.max()) if ids.size else 0
    if n == 0:
        return {}
    line = outline(ids)
    inside = ((ids > 0) & ~line).astype(np.uint8)
    # distance of each inside pixel to the nearest non-inside pixel (its outline or outside the mask)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    flat = ids.ravel()
    dmax = max_per_id(flat, dist.ravel(), n)
    edges, seen = depth_edges(depth_m)
    reach = 2 * EDGE_REACH_PX + 1
    near = cv2.dilate(edges.astype(np.uint8), np.ones((reach, reach), np.uint8)).astype(bool)
    counted = line & seen
    # counts of the selected pixels' ids (integer bincounts: float weights would copy every pixel)
    n_line = np.bincount(flat[counted.ravel()], minlength=n + 1)
    n_on = np.bincount(flat[(counted & near).ravel()], minlength=n + 1)
    present = np.bincount(flat, minlength=n + 1) > 0
    out: dict[int, tuple[float, float | None]] = {}
    for k in np.flatnonzero(present[1:]) + 1:
        align = float(n_on[k] / n_line[k]) if n_line[k] > 0 else None
        out[int(k)] = (float(2 * dmax[k] + 1), align)
    return out


# ------------------------------------------------------------------------ stereo vs monocular depth


def surface_normals(depth_m: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(H, W, 3) unit normals of a depth map in the camera frame (NaN where depth or a neighbour is
    invalid), after a `NORMAL_SMOOTH_PX` box filter over the valid depth."""
    import cv2

    valid = np.isfinite(depth_m) & (depth_m > 0)
    k = (NORMAL_SMOOTH_PX, NORMAL_SMOOTH_PX)
    num = cv2.blur(np.where(valid, depth_m, 0).astype(np.float32), k)
    den = cv2.blur(valid.astype(np.float32), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(valid, num / den, np.nan)
    h, w = z.shape
    u = (np.arange(w, dtype=np.float32) - cx) / fx
    v = (np.arange(h, dtype=np.float32) - cy) / fy
    pts = np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1)
    du = np.full_like(pts, np.nan)
    dv = np.full_like(pts, np.nan)
    du[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dv[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(du, dv)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / np.linalg.norm(n, axis=-1, keepdims=True)


def align_inverse_depth(relative: np.ndarray, disparity_px: np.ndarray) -> np.ndarray | None:
    """Least-squares scale and shift taking a relative inverse depth (Depth Anything V2's output) onto
    the stereo disparity over pixels valid in both; None with fewer than 100 such pixels."""
    ok = np.isfinite(relative) & np.isfinite(disparity_px)
    if ok.sum() < 100:
        return None
    a = np.stack([relative[ok], np.ones(int(ok.sum()))], axis=1).astype(np.float64)
    (scale, shift), *_ = np.linalg.lstsq(a, disparity_px[ok].astype(np.float64), rcond=None)
    return (scale * relative + shift).astype(np.float32)


def normal_disagreement(
    stereo_m: np.ndarray, mono_m: np.ndarray, ids: np.ndarray, intrinsics: tuple[float, float, float, float]
) -> tuple[float | None, dict[int, float]]:
    """Share of pixels whose normals from the two depth maps differ by more than NORMAL_ANGLE_DEG.

    Args:
        stereo_m, mono_m: (H, W) depth in metres (NaN invalid); the scale of `mono_m` does not matter
            (normals of a scaled depth map are the same), a shift does: align relative models first.
        ids: (H, W) instance ids.
        intrinsics: fx, fy, cx, cy of the rectified left camera, px.

    Returns:
        (the sample's share or None without comparable pixels, {object id: its share}).
    """
    ns = surface_normals(stereo_m, *intrinsics)
    nm = surface_normals(mono_m, *intrinsics)
    cos = np.abs(np.sum(ns * nm, axis=-1))  # a normal and its flip are the same surface
    ok = np.isfinite(cos)
    bad = ok & (cos < np.cos(np.deg2rad(NORMAL_ANGLE_DEG)))
    if not ok.any():
        return None, {}
    flat = ids.ravel()
    n = int(ids.max()) if ids.size else 0
    n_ok = np.bincount(flat, weights=ok.ravel(), minlength=n + 1)
    n_bad = np.bincount(flat, weights=bad.ravel(), minlength=n + 1)
    per = {int(k): float(n_bad[k] / n_ok[k]) for k in range(1, n + 1) if n_ok[k] > 0}
    return float(bad.sum() / ok.sum()), per


# ------------------------------------------------------------------------------------ video frames


def video_neighbours(sample_ids: Sequence[str]) -> dict[str, str]:
    """Each video frame's neighbour to compare with: the previous frame of the same video (the first
    frame: the next one). Video frames are the `<video>_f<NNNNNN>` ids labeler gives them."""
    videos: dict[str, list[tuple[int, str]]] = {}
    for sid in sample_ids:
        m = VIDEO_FRAME.match(sid)
        if m:
            videos.setdefault(m["video"], []).append((int(m["frame"]), sid))
    out = {}
    for frames in videos.values():
        frames.sort()
        for i, (_, sid) in enumerate(frames):
            if len(frames) > 1:
                out[sid] = frames[i - 1][1] if i > 0 else frames[1][1]
    return out


def temporal_instability(
    left_a: np.ndarray, depth_a: np.ndarray, left_b: np.ndarray, depth_b: np.ndarray
) -> float | None:
    """Median |z_b - z_a| / z_a over static pixels (blurred grey change < STATIC_GREY, depth valid in
    both); None when fewer than MIN_STATIC_SHARE of the pixels are static (a moving camera)."""
    import cv2

    def grey(rgb: np.ndarray) -> np.ndarray:
        return cv2.blur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (5, 5))

    static = np.abs(grey(left_a) - grey(left_b)) < STATIC_GREY
    ok = static & np.isfinite(depth_a) & np.isfinite(depth_b) & (depth_a > 0)
    if ok.sum() < MIN_STATIC_SHARE * ok.size:
        return None
    return float(np.median(np.abs(depth_b[ok] - depth_a[ok]) / depth_a[ok]))


# ------------------------------------------------------------------------------------------- tracks


def track_depth_jumps(track_id: np.ndarray, time_s: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
    """Each object row's depth jump along its track.

    Args:
        track_id, time_s, depth_m: (N,) float64 per object row: its track (NaN: untracked), its frame's
            timestamp, its median depth (NaN: none).

    Returns:
        (N,) float64: the larger of |ln(z_b / z_a)| / max(t_b - t_a, TRACK_MIN_GAP_S) to the previous and
        to the next labelled frame of its track (1/s); NaN without a track, a time, a depth, or another frame
        of its track that has them. The log makes 2 m -> 3 m and 3 m -> 2 m the same jump.
    """
    out = np.full(track_id.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(track_id) & np.isfinite(time_s) & np.isfinite(depth_m) & (depth_m > 0))
    if ok.size < 2:
        return out
    rows = ok[np.lexsort((time_s[ok], track_id[ok]))]
    same = track_id[rows[1:]] == track_id[rows[:-1]]
    gap = np.maximum(time_s[rows[1:]] - time_s[rows[:-1]], TRACK_MIN_GAP_S)
    rate = np.where(same, np.abs(np.log(depth_m[rows[1:]] / depth_m[rows[:-1]])) / gap, np.nan)
    out[rows[1:]] = rate  # to the previous frame
    out[rows[:-1]] = np.fmax(out[rows[:-1]], rate)  # and to the next
    return out


def with_track_jumps(samples: pa.Table, objects: pa.Table) -> pa.Table:
    """`objects` with the TRACK_JUMP column (its frame's time from `samples` by row); as it is without
    a `track_id` column (a dataset labelled before tracks existed)."""
    import pyarrow as pa

    if "track_id" not in objects.column_names or TRACK_JUMP in objects.column_names:
        return objects
    sample_rows = np.asarray(samples.column("row").to_numpy(), dtype=np.int64)
    rows = np.asarray(objects.column("row").to_numpy(), dtype=np.int64)
    time_by_row = np.full(int(max(sample_rows.max(initial=-1), rows.max(initial=-1))) + 1, np.nan)
    time_by_row[sample_rows] = _col(samples, "timestamp_s")
    jumps = track_depth_jumps(_col(objects, "track_id"), time_by_row[rows], _col(objects, "depth_m_median"))
    return objects.append_column(TRACK_JUMP, pa.array(jumps, pa.float64(), mask=~np.isfinite(jumps)))


def track_jumps(objects: pa.Table) -> dict[int, float]:
    """{track id: its largest TRACK_JUMP} over the tracks with one (objects from `with_track_jumps`); a
    track is flagged where this is at least TRACK_JUMP_FULL."""
    if TRACK_JUMP not in objects.column_names:
        return {}
    tid, jump = _col(objects, "track_id"), _col(objects, TRACK_JUMP)
    keep = np.isfinite(jump) & np.isfinite(tid)
    if not keep.any():
        return {}
    ids, where = np.unique(tid[keep].astype(np.int64), return_inverse=True)
    most = np.full(len(ids), -np.inf)
    np.maximum.at(most, where, jump[keep])  # one pass over the tracked objects, however many tracks
    return dict(zip(ids.tolist(), most.tolist(), strict=True))


# ------------------------------------------------------------------------------- the combined score


def _col(t: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for null (an absent column: all NaN)."""
    if name not in t.column_names:
        return np.full(t.num_rows, np.nan)
    return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def _mean_present(terms: dict[str, np.ndarray]) -> np.ndarray:
    stack = np.stack(list(terms.values()))
    present = np.isfinite(stack)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(0), np.nansum(stack, 0) / np.maximum(present.sum(0), 1), np.nan)


def object_terms(objects: pa.Table, image_px: int) -> dict[str, np.ndarray]:
    """The object terms (NaN: absent) of every row of an objects table."""
    p10, p90 = _col(objects, "depth_m_p10"), _col(objects, "depth_m_p90")
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.clip(np.log(p90 / p10) / np.log(SPREAD_FULL), 0, 1)
    small = np.clip(1 - _col(objects, "area_px") / (SMALL_SHARE * image_px), 0, 1)
    thin = np.clip(1 - (_col(objects, "thickness_px") - 1) / (THIN_FULL_PX - 1), 0, 1)
    return {
        "spread": spread,
        "shape": np.fmax(small, thin),
        "edges": 1 - _col(objects, "edge_alignment"),
        "holes": 1 - _col(objects, "valid_fraction"),
        "mono": _col(objects, "mono_disagreement"),
        "jump": np.clip(_col(objects, TRACK_JUMP) / TRACK_JUMP_FULL, 0, 1),
    }


def object_doubt(objects: pa.Table, image_px: int) -> np.ndarray:
    """(N,) float64 doubt of every object row, in [0, 1]."""
    return _mean_present(object_terms(objects, image_px))


def sample_terms(samples: pa.Table, objects: pa.Table, image_px: int) -> dict[str, np.ndarray]:
    """The sample terms of every row of a samples table; `objects` is the worst object doubt per row."""
    worst = np.full(samples.num_rows, np.nan)
    if objects.num_rows:
        doubt = object_doubt(objects, image_px)
        rows = np.asarray(objects.column("row").to_numpy(), dtype=np.int64)
        sample_rows = np.asarray(samples.column("row").to_numpy(), dtype=np.int64)
        by_row = np.full(int(max(rows.max(), sample_rows.max(initial=0))) + 1, np.nan)
        np.fmax.at(by_row, rows, doubt)
        worst = by_row[sample_rows]
    return {
        "confidence": 1 - _col(samples, "confidence_mean"),
        "holes": 1 - _col(samples, "valid_depth_fraction"),
        "mono": _col(samples, "mono_disagreement"),
        "flicker": np.clip(_col(samples, "temporal_instability") / FLICKER_FULL, 0, None).clip(max=1),
        "objects": worst,
    }


def sample_doubt(samples: pa.Table, objects: pa.Table, image_px: int) -> np.ndarray:
    """(N,) float64 doubt of every sample row, in [0, 1] (NaN for failed samples: nothing to doubt)."""
    return _mean_present(sample_terms(samples, objects, image_px))


def with_doubt(samples: pa.Table, objects: pa.Table, image_px: int) -> tuple[pa.Table, pa.Table]:
    """The two tables with `doubt` and one `doubt_<term>` column per term appended (objects also with
    the TRACK_JUMP signal, which needs the samples' times)."""
    import pyarrow as pa

    objects = with_track_jumps(samples, objects)

    def add(t: pa.Table, terms: dict[str, np.ndarray]) -> pa.Table:
        for name, values in {"doubt": _mean_present(terms), **terms}.items():
            col = "doubt" if name == "doubt" else f"doubt_{name}"
            t = t.append_column(col, pa.array(values, pa.float64(), mask=~np.isfinite(values)))
        return t

    return (
        add(samples, sample_terms(samples, objects, image_px)),
        add(objects, object_terms(objects, image_px)),
    )


def describe(values: dict[str, Any]) -> str:
    """`doubt 0.42 (edges 0.80, spread 0.51)`: the score and its two largest terms, for captions."""
    score = values.get("doubt")
    if score is None:
        return "doubt n/a"
    terms = sorted(
        ((k[len("doubt_") :], v) for k, v in values.items() if k.startswith("doubt_") and v is not None),
        key=lambda kv: -kv[1],
    )[:2]
    inner = ", ".join(f"{k} {v:.2f}" for k, v in terms)
    return f"doubt {score:.2f}" + (f" ({inner})" if inner else "")
