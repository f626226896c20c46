"""Losses, metrics and the maps -> instances step on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_schema.commands import InstanceParams
from labeler.train.heads.instances import instances_from_maps, object_table
from labeler.train.heads.losses import l1_loss, seg_loss, silog_loss
from labeler.train.heads.metrics import HeldoutMetrics, average_precision, depth_errors, iou_matrix


def test_silog_is_scale_invariant_and_masks_invalid():
    gt = torch.rand(2, 8, 8) * 4 + 1
    w = torch.ones_like(gt)
    assert float(silog_loss(3 * gt, gt, w, variance_focus=1.0)) == pytest.approx(0, abs=1e-3)
    assert float(silog_loss(3 * gt, gt, w, variance_focus=0.5)) > 0.5
    pred = gt.clone()
    pred[0, 0, 0] = 100.0
    w[0, 0, 0] = 0  # an invalid pixel: no effect, no NaN
    assert float(silog_loss(pred, gt, w)) == pytest.approx(0, abs=1e-3)
    assert float(l1_loss(gt + 0.5, gt, w)) == pytest.approx(0.5)
    w2 = torch.zeros_like(gt)
    w2[:, :4] = 1.0  # confidence weighting: only the weighted half counts
    pred2 = gt.clone()
    pred2[:, 4:] += 10
    assert float(l1_loss(pred2, gt, w2)) == pytest.approx(0, abs=1e-6)


def test_seg_loss_prefers_the_right_maps():
    fg = torch.zeros(1, 16, 16)
    fg[:, 4:12, 4:12] = 1
    edges = torch.zeros_like(fg)
    edges[:, 4, 4:12] = 1
    good = seg_loss(20 * (2 * fg - 1), 20 * (2 * edges - 1), fg, edges)
    bad = seg_loss(-20 * (2 * fg - 1), torch.zeros_like(fg), fg, edges)
    assert float(good) < 0.05 < float(bad)
    assert float(seg_loss(torch.zeros_like(fg), torch.zeros_like(fg), fg, edges, kind="focal")) > 0


def test_depth_metrics():
    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[1.1, 2.0], [2.0, 5.0]])
    a, d, n = depth_errors(pred, gt)
    assert n == 3 and d == 2 and a == pytest.approx(0.1 + 0 + 0.5)


def test_predict_reports_depth_with_the_training_metrics():
    """`labeler predict`'s comparison against stereo uses the held-out metrics' AbsRel and δ1."""
    from labeler.predict import compare_depth

    gt = np.array([[1.0, 2.0], [4.0, np.nan]])
    pred = np.array([[1.1, 2.0], [2.0, 5.0]])
    s = compare_depth(pred, gt)
    assert s is not None
    acc = HeldoutMetrics()
    acc.add_depth(pred, gt)
    held = acc.summary()
    assert (s.abs_rel, s.delta1) == (held.abs_rel, held.delta1)
    assert s.abs_rel == pytest.approx(0.6 / 3) and s.delta1 == pytest.approx(2 / 3)
    assert s.median_ratio == pytest.approx(1.0) and s.stereo_valid_fraction == 0.75
    assert compare_depth(pred, np.full_like(gt, np.nan)) is None


def test_instance_metrics():
    target = np.zeros((10, 10), np.uint16)
    target[:5, :5], target[5:, 5:] = 1, 2
    pred = np.zeros_like(target)
    pred[:5, :5] = 2
    pred[6:, 6:] = 1  # IoU 16/25 with target 2
    iou = iou_matrix(pred, target)
    assert iou.shape == (2, 2) and iou[1, 0] == 1.0 and iou[0, 1] == pytest.approx(16 / 25)
    acc = HeldoutMetrics()
    acc.add_instances(pred, np.array([0.9, 0.8]), target)
    s = acc.summary()
    assert s.mask_ap50 == pytest.approx(1.0) and s.mask_miou == pytest.approx((1 + 16 / 25) / 2)
    assert s.abs_rel is None and s.heldout_loss is None  # no depth added, no loss given
    # a confident false positive ranked first halves the precision at the first recall step
    assert average_precision(np.array([0.9, 0.5]), np.array([False, True]), 1) == pytest.approx(0.5)


def test_depth_step_splits_touching_objects():
    """One blob of objectness with no boundary: one object without depth, two where the depth steps."""
    obj = np.zeros((40, 60), np.float32)
    obj[10:30, 10:50] = 0.95
    bnd = np.zeros_like(obj)
    depth = np.full(obj.shape, 5.0, np.float32)
    depth[:, 30:] = 1.5
    params = InstanceParams(min_area_frac=0.01)
    ids, scores = instances_from_maps(obj, bnd, None, params)
    assert ids.max() == 1
    ids, scores = instances_from_maps(obj, bnd, depth, params)
    assert ids.max() == 2 and (ids > 0).sum() == 20 * 40  # cut pixels go back to their side
    table = object_table(ids, scores, depth)
    assert sorted(round(o.depth_m_median, 2) for o in table) == [1.5, 5.0]
    assert all(o.score == pytest.approx(0.95) for o in table)
    bnd[:, 20] = 0.9  # a predicted boundary also splits, without depth
    assert instances_from_maps(obj, bnd, None, params)[0].max() == 2
