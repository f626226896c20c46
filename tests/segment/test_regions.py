"""The region sums and the merge of the classical backend, against direct computations on the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.segment.regions import (
    border_stats,
    colour_steps,
    depth_steps,
    merge,
    plane_sse,
    region_sums,
)

JUMP = float(np.log1p(0.06))


def _blocks(h: int, w: int, size: int) -> np.ndarray:
    """(h, w) labels of size x size blocks, row-major."""
    ys, xs = np.mgrid[0:h, 0:w]
    return (ys // size) * -(-w // size) + xs // size


def _flat_planes(h: int, w: int, colours: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """L*, a*, b* planes with one colour per label and no texture."""
    return [colours[labels, c].astype(np.float32) for c in range(3)]


def test_relabel_matches_the_stats_of_the_merged_map() -> None:
    rng = np.random.default_rng(0)
    h, w = 40, 48
    labels = _blocks(h, w, 8)
    planes = [rng.normal(50, 10, (h, w)).astype(np.float32) for _ in range(3)]
    log_d = np.where(np.arange(w) < 24, 2.0, 2.3).astype(np.float32)[None].repeat(h, 0)  # a step at a border
    steps = colour_steps(planes)
    graph = border_stats(labels, steps, log_d, jump=JUMP)
    root = rng.permutation(np.arange(labels.max() + 1) % 7)  # 30 blocks into 7 regions, ids shuffled
    direct = border_stats(root[labels], steps, log_d, jump=JUMP)
    merged = graph.relabel(root)
    fields = ("pairs", "length", "contrast", "front_lo", "front_hi", "hi_nearer", "least", "inner_length")
    for field in (*fields, "inner_contrast"):
        np.testing.assert_allclose(getattr(merged, field), getattr(direct, field), err_msg=field)
    np.testing.assert_array_equal(merged.frame, direct.frame)
    assert merged.jumps.sum() > 0  # the step is seen, with its side


def test_border_stats_count_pairs_and_front_side() -> None:
    """Two columns of labels, the right one nearer: its whole border is a jump with it in front."""
    h, w = 6, 8
    labels = (np.arange(w) >= 4).astype(np.int64)[None].repeat(h, 0)
    colours = np.array([[50.0, 0, 0], [60.0, 0, 0]])
    planes = _flat_planes(h, w, colours, labels)
    log_d = np.where(labels == 1, np.log(20.0), np.log(10.0)).astype(np.float32)
    g = border_stats(labels, colour_steps(planes), log_d, jump=JUMP)
    np.testing.assert_array_equal(g.pairs, [[0, 1]])
    assert g.length.tolist() == [h] and g.contrast.tolist() == pytest.approx([10.0 * h])
    assert g.front_hi.tolist() == [h] and g.front_lo.tolist() == [0]  # label 1 (the hi end) is in front
    # inside each half: 6 rows x 3 horizontal pairs + 5 x 4 vertical pairs, no contrast
    assert g.inner_length.tolist() == [38, 38] and g.inner_contrast.tolist() == [0, 0]
    assert g.frame.tolist() == [4 + 4 + (h - 2), 4 + 4 + (h - 2)]  # top, bottom, own side edge


def test_noise_jumps_along_a_border_are_dropped_and_a_silhouette_is_kept() -> None:
    """Two bands of one surface whose border the matcher's noise crosses both ways (every other column
    the lower band looks 15 % nearer, then 15 % farther): pixel by pixel half the border is a jump, on
    average it is none. A band that is 15 % nearer along its whole border keeps every jump."""
    h, w = 20, 24
    labels = (np.arange(h) >= 10).astype(np.int64)[:, None].repeat(w, 1)
    planes = _flat_planes(h, w, np.array([[50.0, 0, 0], [50.0, 0, 0]]), labels)
    sign = np.where(np.arange(w) % 2 == 0, 1.0, -1.0)
    noisy = np.where(labels == 1, np.log(10.0) + np.log1p(0.15) * sign, np.log(10.0)).astype(np.float32)
    g = border_stats(labels, colour_steps(planes), noisy, jump=JUMP)
    assert g.jumps.tolist() == [w] and g.front_hi.tolist() == [w / 2]  # every column a jump, half each way
    assert abs(g.hi_nearer[0]) < 1e-4 and g.least[0] >= w * JUMP  # never under the relative jump
    assert g.without_noise_fronts().jumps.tolist() == [0]
    nearer = np.where(labels == 1, np.log(11.5), np.log(10.0)).astype(np.float32)
    g = border_stats(labels, colour_steps(planes), nearer, jump=JUMP)
    assert g.front_hi.tolist() == [w] and g.hi_nearer[0] == pytest.approx(w * np.log(1.15), rel=1e-3)
    kept = g.without_noise_fronts()
    assert kept.front_hi.tolist() == [w] and kept.front_lo.tolist() == [0]


def test_depth_steps_see_a_jump_and_not_a_slope() -> None:
    w = 30
    step = np.where(np.arange(w) < 15, 1.0, 1.2).astype(np.float32)[None].repeat(3, 0)
    ramp = (0.01 * np.arange(w)).astype(np.float32)[None].repeat(3, 0)
    ys, xs = np.nonzero(np.ones((3, w - 1), bool))
    across = depth_steps(step, 1, ys, xs).reshape(3, w - 1)
    assert across[:, 14] == pytest.approx(0.2)  # the border between columns 14 and 15
    assert np.all(across[:, :10] == 0) and np.all(across[:, 20:] == 0)
    # away from the image edges, where a probe reads the edge pixel and the slope looks flatter
    assert np.abs(depth_steps(ramp, 1, ys, xs).reshape(3, w - 1)[:, 6:-7]).max() < 1e-6


def test_depth_steps_see_no_jump_at_a_crease() -> None:
    """A wall (flat) meeting a floor whose disparity grows away from it: continuous, not a jump.

    (The floor of the demo rig grows 0.1 px per row from ~8 px at the wall: over the 2 px probes that is
    a 6 % step, the wall threshold, before the floor's own slope explains it.)"""
    h = 40
    rows = np.arange(h, dtype=np.float32)
    log_d = np.log(np.where(rows < 20, 8.0, 8.0 + 0.4 * (rows - 19.5)))[:, None].repeat(3, 1)
    ys, xs = np.nonzero(np.ones((h - 1, 3), bool))
    across = depth_steps(log_d.astype(np.float32), 0, ys, xs).reshape(h - 1, 3)
    raw = log_d[22, 0] - log_d[17, 0]
    assert raw > JUMP  # what the probes alone would call a jump
    assert np.abs(across[19]).max() < 0.5 * JUMP  # the border between rows 19 and 20 (measured 0.28)


@pytest.mark.parametrize("collinear", [False, True], ids=["plane", "one row"])
def test_plane_sse_is_the_least_squares_residual(collinear: bool) -> None:
    rng = np.random.default_rng(1)
    h, w = (1, 60) if collinear else (20, 30)
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = (xx / w).ravel(), (yy / h).ravel()
    d = 12.0 + 3.0 * x - 2.0 * y + rng.normal(0, 0.3, h * w)
    moments = [float(t.sum()) for t in (np.ones_like(x), x, y, d, x * x, x * y, y * y, x * d, y * d, d * d)]
    design = np.stack([x, y, np.ones_like(x)], axis=1)
    residual = d - design @ np.linalg.lstsq(design, d, rcond=None)[0]
    assert plane_sse(moments) == pytest.approx(float(residual @ residual), rel=1e-6)


def test_region_sums_are_the_pixel_sums() -> None:
    """Colour sums, and plane moments over the pixels of smooth depth (all of a gentle slope)."""
    rng = np.random.default_rng(3)
    h, w = 24, 32
    labels = _blocks(h, w, 8)
    planes = [rng.normal(50, 10, (h, w)).astype(np.float32) for _ in range(3)]
    yy, xx = np.mgrid[0:h, 0:w]
    log_d = np.log(10.0 + 0.02 * xx + 0.01 * yy).astype(np.float32)
    sums = region_sums(labels, planes, log_d, int(labels.max()) + 1)
    r = labels == 5
    x, y, d = (xx / w)[r], (yy / h)[r], np.exp(log_d[r].astype(np.float64))
    lab = [p[r].astype(np.float64) for p in planes]
    want = [r.sum(), *(c.sum() for c in lab), sum((c * c).sum() for c in lab)]
    want += [t.sum() for t in (np.ones_like(x), x, y, d, x * x, x * y, y * y, x * d, y * d, d * d)]
    np.testing.assert_allclose(sums[5], want, rtol=1e-9)


def test_merge_joins_one_colour_and_stops_at_another() -> None:
    """Three flat strips, colours 0, 5 and 40 apart: the first two merge (cost 5), the third stays."""
    h, w = 12, 36
    labels = np.repeat(np.arange(3), 12)[None].repeat(h, 0)
    planes = _flat_planes(h, w, np.array([[50.0, 0, 0], [55.0, 0, 0], [90.0, 0, 0]]), labels)
    graph = border_stats(labels, colour_steps(planes), None, jump=JUMP)
    root = merge(region_sums(labels, planes, None, 3), graph, threshold=10.0, plane_tol_rel=0.03)
    assert root.tolist() == [0, 0, 1]


def test_a_depth_wall_keeps_one_colour_apart_and_one_plane_joins_it() -> None:
    """One textured colour over a 6 x 6 grid of blocks: a disparity step splits it in two, one plane not."""
    rng = np.random.default_rng(2)
    h, w = 48, 48
    labels = _blocks(h, w, 8)
    planes = [rng.normal(50, 4, (h, w)).astype(np.float32) for _ in range(3)]
    steps = colour_steps(planes)
    xs = np.arange(w)[None].repeat(h, 0)
    for log_d, parts in (
        (np.where(xs < 24, np.log(10.0), np.log(14.0)), 2),
        (np.log(10.0 + 0.05 * xs), 1),
    ):
        log_d = log_d.astype(np.float32)
        graph = border_stats(labels, steps, log_d, jump=JUMP)
        sums = region_sums(labels, planes, log_d, int(labels.max()) + 1)
        root = merge(sums, graph, threshold=10.0, plane_tol_rel=0.03)
        assert root.max() + 1 == parts
        if parts == 2:  # the split is the step
            assert len(set(root[labels[:, :24]].ravel())) == 1 and len(set(root[labels[:, 24:]].ravel())) == 1


@pytest.mark.parametrize(("slope_px", "parts"), [(0.0, 1), (0.5, 2)], ids=["one plane", "a bend"])
def test_one_plane_halves_the_cost(slope_px: float, parts: int) -> None:
    """Two flat colours 18 L* apart (cost 18 > threshold 10, half of it below) over one disparity (one
    plane: they merge) or over a bend with no depth step at the border (a box on a floor: they do not)."""
    h, w = 60, 40
    yy = np.mgrid[0:h, 0:w][0]
    labels = (yy >= 30).astype(np.int64)
    planes = _flat_planes(h, w, np.array([[50.0, 0, 0], [68.0, 0, 0]]), labels)
    log_d = np.log(25.0 + slope_px * np.maximum(yy - 30, 0)).astype(np.float32)
    graph = border_stats(labels, colour_steps(planes), log_d, jump=JUMP)
    assert graph.jumps.tolist() == [0]
    root = merge(region_sums(labels, planes, log_d, 2), graph, threshold=10.0, plane_tol_rel=0.03)
    assert root.max() + 1 == parts
