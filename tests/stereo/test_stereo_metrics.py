"""stereo_errors on toy maps: EPE, bad-N with invalid predictions counted as bad, density."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from labeler.stereo.metrics import stereo_errors


def test_values_on_a_toy_map() -> None:
    gt = np.array([[10.0, 10.0, 10.0, 10.0, np.inf, np.nan]], np.float32)
    pred = np.array([[10.5, 13.0, np.nan, 9.0, 1.0, 1.0]], np.float32)
    e = stereo_errors(pred, gt, bad_px=2.0)
    assert e.n_valid_gt == 4
    assert e.epe_px == pytest.approx((0.5 + 3.0 + 1.0) / 3)
    assert e.bad_px_percent == pytest.approx(100 * 2 / 4)  # 13.0 is off by 3, NaN is bad
    assert e.density_percent == pytest.approx(75.0)
    assert stereo_errors(pred, gt, bad_px=3.5).bad_px_percent == pytest.approx(25.0)


def test_perfect_and_empty_predictions() -> None:
    gt = np.full((4, 5), 7.0, np.float32)
    perfect = stereo_errors(gt.copy(), gt)
    assert (perfect.epe_px, perfect.bad_px_percent, perfect.density_percent) == (0.0, 0.0, 100.0)
    empty = stereo_errors(np.full_like(gt, np.nan), gt)
    assert np.isnan(empty.epe_px) and empty.bad_px_percent == 100.0 and empty.density_percent == 0.0


def test_inf_prediction_is_invalid() -> None:
    gt = np.full((2, 2), 5.0)
    pred = np.array([[5.0, np.inf], [-np.inf, 5.0]])
    assert stereo_errors(pred, gt).density_percent == 50.0


def test_record_is_frozen() -> None:
    e = stereo_errors(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.epe_px = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), "same"),
        (np.ones(4), np.ones(4), "same"),
        (np.ones((2, 2)), np.full((2, 2), np.inf), "no valid pixel"),
    ],
)
def test_rejects(pred: np.ndarray, gt: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stereo_errors(pred, gt)
