"""Real data through the whole `labeler run` path: the Middlebury Motorcycle pair with its own calibration.

Checks the metric depth the dataset stores against depth from the ground-truth disparity, which tests
the calibration scaling (fx, doffs, baseline) as well as the matcher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema.commands import PseudoLabelConfig
from labeler import open_dataset
from labeler.depth import disparity_to_depth
from labeler.stereo.metrics import stereo_errors
from pipelines.pseudo_label import run_pseudo_label

CALIB = Path(__file__).resolve().parents[2] / "calib" / "middlebury-motorcycle.yaml"


@pytest.fixture(scope="module")
def motorcycle_dataset(tmp_path_factory):
    from labeler.synthetic.demo import write_middlebury

    root = tmp_path_factory.mktemp("mb")
    raw = write_middlebury(root)
    manifest = run_pseudo_label(
        PseudoLabelConfig(
            inputs=raw, rectify=True, calib=CALIB, out=root / "ds", scheduler="sync", progress=False
        )
    )
    gt = np.load(root / "truth" / "motorcycle_disparity_px.npy")
    return open_dataset(root / "ds"), manifest, gt


def test_identity_rectification_and_disparity_accuracy(motorcycle_dataset):
    from skimage.data import stereo_motorcycle

    ds, manifest, gt = motorcycle_dataset
    s = ds[0]
    assert s.sample_id == "motorcycle"
    assert np.array_equal(s.left, stereo_motorcycle()[0])  # already rectified: passed through unchanged
    e = stereo_errors(s.disparity_px, gt)
    assert e.bad_px_percent < 9.5 and e.epe_px < 1.55 and e.density_percent == 100.0  # as the sgbm test


def test_metric_depth_against_ground_truth(motorcycle_dataset):
    ds, _, gt = motorcycle_dataset
    manifest = ds.manifest
    assert manifest.depth.doffs_px == pytest.approx(31.086, abs=1e-3)
    assert manifest.depth.fx_px == pytest.approx(994.978, abs=1e-3)
    gt_depth = disparity_to_depth(gt, manifest.depth)
    depth = ds[0].depth_m
    both = np.isfinite(gt_depth) & np.isfinite(depth)
    abs_rel = np.abs(depth[both] - gt_depth[both]) / gt_depth[both]
    assert 1.7 < np.median(gt_depth[both]) < 3.5  # the scene spans ~1.7–4 m
    assert np.median(abs_rel) < 0.01
    assert (abs_rel < 0.05).mean() > 0.9
