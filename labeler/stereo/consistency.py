"""Geometric checks on a left-image disparity map, shared by the stereo backends.

Each backend passes its own tolerances: they are part of what a backend computes, so changing one
changes the labels (and, for `sgbm`, the dataset version of `make dataset`).

Conventions: `d_left` is the left image's disparity (right x = left x - d), `d_right` the right
image's (left x = right x + d); both (H, W) float32 px, NaN where invalid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Sampling = Literal["nearest", "linear"]


def lr_difference(d_left: np.ndarray, d_right: np.ndarray, *, sampling: Sampling) -> np.ndarray:
    """Left-right consistency: d_left(x) - d_right(x - d_left(x)) per pixel, in px (signed).

    Args:
        d_left: (H, W) float32 disparity of the left image.
        d_right: (H, W) float32 disparity of the right image.
        sampling: how d_right is read at the (fractional) match x - d_left(x):
            "nearest": at the rounded column; NaN where that column is outside [0, W - 1];
            "linear": interpolated along the row; NaN where x - d_left(x) is outside [0, W - 1].

    Returns:
        (H, W) float32; NaN also where d_left is not finite.
    """
    w = d_left.shape[1]
    x = np.arange(w, dtype=np.float32)[None, :]
    if sampling == "nearest":
        # NaN disparities go far out of the image, so no NaN reaches the comparisons and the cast
        x_r = np.rint(x - np.nan_to_num(d_left, nan=-1e6))
        inside = (x_r >= 0) & (x_r < w) & np.isfinite(d_left)
        cols = np.where(inside, x_r, 0).astype(np.intp)
        sampled = np.take_along_axis(d_right, cols, axis=1)
    elif sampling == "linear":
        xr = x - d_left
        inside = np.isfinite(xr) & (xr >= 0) & (xr <= w - 1)
        xs = np.where(inside, xr, 0.0)
        x0 = np.clip(np.floor(xs).astype(np.int64), 0, max(w - 2, 0))
        frac = (xs - x0).astype(np.float32)
        x1 = np.minimum(x0 + 1, w - 1)
        sampled = (1 - frac) * np.take_along_axis(d_right, x0, axis=1) + frac * np.take_along_axis(
            d_right, x1, axis=1
        )
    else:
        raise ValueError(f"sampling must be 'nearest' or 'linear', got {sampling!r}")
    return np.where(inside, d_left - sampled, np.nan).astype(np.float32)


def outside_right(disparity: np.ndarray, *, margin_px: float) -> np.ndarray:
    """(H, W) bool: the match x - d lies more than `margin_px` left of the right image (x - d < -margin_px).

    NaN disparities are never outside.
    """
    x = np.arange(disparity.shape[1], dtype=np.float32)[None, :]
    with np.errstate(invalid="ignore"):
        return (x - disparity) < -margin_px


def occluded(disparity: np.ndarray, *, tol_px: float) -> np.ndarray:
    """Pixels of the left view hidden in the right one: a pixel further right lands on or past them.

    Pixel x (disparity d) is occluded when some x' > x has x' - d(x') <= x - d(x) - tol_px, i.e. a
    nearer surface covers its match. NaN pixels occlude nothing.

    Args:
        disparity: (H, W) float32 in px, NaN invalid.
        tol_px: how far past x - d(x) another pixel's match must land to hide it.

    Returns:
        (H, W) bool.
    """
    h, w = disparity.shape
    shifted = np.where(np.isfinite(disparity), disparity, -np.inf) - np.arange(w, dtype=np.float32)[None, :]
    # best (largest d' - x') over x' > x: a reversed running maximum, shifted by one column
    run = np.maximum.accumulate(shifted[:, ::-1], axis=1)[:, ::-1]
    after = np.concatenate([run[:, 1:], np.full((h, 1), -np.inf, np.float32)], axis=1)
    return np.isfinite(disparity) & (after >= shifted + tol_px)


def fill_from_background(disparity: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Hidden pixels take the farther of the nearest visible pixels left and right of them in their row.

    A pixel hidden in the right view (occluded, or matched outside it) most often belongs to the surface
    behind the occluder, and that surface continues on one side of the gap: the smaller of the two
    disparities that bound the gap is its best guess (SGM's occlusion interpolation, Hirschmüller 2008).
    Where only one side exists (the left image band, a row's end), that side fills it. A row with no
    visible pixel stays NaN.

    Args:
        disparity: (H, W) float32 in px, NaN invalid.
        hidden: (H, W) bool, the pixels to fill; NaN pixels count as hidden too.

    Returns:
        (H, W) float32: `disparity` where visible, the fill elsewhere.
    """
    h, w = disparity.shape
    seen = ~hidden & np.isfinite(disparity)
    # each row padded with an unseen inf column on both sides, then flat: every run of unseen pixels
    # lies inside one row, bounded by a seen pixel or a pad (inf) on each side
    padded = np.full((h, w + 2), np.inf, np.float32)
    padded[:, 1:-1] = np.where(seen, disparity, np.inf)
    gap = np.zeros((h, w + 2), np.int8)
    gap[:, 1:-1] = ~seen
    edges = np.diff(gap.ravel())
    starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
    flat = padded.ravel()
    fill = np.minimum(flat[starts - 1], flat[ends])  # the farther of the two bounds; inf: none
    lengths = ends - starts
    at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    flat[at] = np.repeat(fill, lengths)
    out = padded[:, 1:-1]
    out[np.isinf(out)] = np.nan
    return np.ascontiguousarray(out)
