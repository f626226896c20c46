"""sgbm accuracy on real data: Middlebury 2014 *motorcycle* as scikit-image ships it (1/4 size, rectified).

Bounds are the measured values (in the comments) plus a margin. For comparison, plain OpenCV (SGBM
3-way, block 5, 64 disparities from 0, no consistency check) scores bad-2 18.7 %, EPE 1.06 px,
density 86.8 %, and bad-2 16.0 % with its WLS filter. Issue 27 asked for bad-2 <= 12 % without tuning to
this image (the same rules score cones 9.5 %, teddy 10.0 %, tsukuba 4.3 %, venus 2.0 %:
benchmarks/eval_stereo_real.py); before it, hidden pixels were NaN and bad-2 was 13.7 %.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.data import stereo_motorcycle

from data_schema.backends import SgbmConfig
from labeler.stereo.base import Disparity
from labeler.stereo.metrics import stereo_errors
from labeler.stereo.sgbm import SgbmBackend


@pytest.fixture(scope="module")
def motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left, right, gt = stereo_motorcycle()  # gt: (500, 741) float32 px, +inf where unknown
    return left, right, gt


@pytest.fixture(scope="module")
def default_run(motorcycle) -> Disparity:
    left, right, _ = motorcycle
    return SgbmBackend().disparity(left, right)


def test_default_config_accuracy(motorcycle, default_run: Disparity) -> None:
    errors = stereo_errors(default_run.disparity_px, motorcycle[2], bad_px=2.0)
    assert errors.bad_px_percent < 9.5  # measured 8.47
    assert errors.epe_px < 1.55  # measured 1.43 (every pixel, the filled ones too)
    assert errors.density_percent == 100.0  # hidden pixels take the background's disparity


def test_observed_pixels_accuracy(motorcycle, default_run: Disparity) -> None:
    """The pixels matched or filled from matches (confidence > 0), without the background fill."""
    d, c = default_run.disparity_px, default_run.confidence
    errors = stereo_errors(np.where(c > 0, d, np.nan), motorcycle[2])
    assert errors.epe_px < 1.08  # measured 1.022
    assert errors.density_percent > 91.0  # measured 92.0; the rest is occluded or outside the right view


def test_without_wls_accuracy(motorcycle) -> None:
    left, right, gt = motorcycle
    errors = stereo_errors(SgbmBackend(SgbmConfig(wls=False)).disparity(left, right).disparity_px, gt)
    assert errors.bad_px_percent < 8.7  # measured 7.84
    assert errors.epe_px < 1.5  # measured 1.41


def test_search_range_is_chosen_per_pair(motorcycle) -> None:
    left, right, gt = motorcycle
    lo, num = SgbmBackend().search_range(left, right)
    finite = gt[np.isfinite(gt)]  # 7.2 .. 59.9 px
    assert lo <= finite.min() and lo + num > finite.max()
    assert num <= 96  # and not absurdly wide (measured: -4 .. 76)


def test_confidence_ranks_errors(motorcycle, default_run: Disparity) -> None:
    """Pixels below the median confidence hold most of the errors."""
    d, c, gt = default_run.disparity_px, default_run.confidence, motorcycle[2]
    valid = np.isfinite(d) & np.isfinite(gt)
    bad = np.abs(d - gt) > 2.0
    median = np.median(c[valid])
    low, high = valid & (c < median), valid & (c >= median)
    assert bad[high].mean() < 0.035  # measured 2.6 %
    assert bad[low].mean() > 3 * bad[high].mean()  # measured 14.3 %
