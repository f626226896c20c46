"""Stereo accuracy against ground-truth disparity (Middlebury-style EPE, bad-N, density)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StereoErrors:
    """Errors of one predicted disparity map over the pixels with valid ground truth.

    Attributes:
        epe_px: mean |pred - gt| in px over pixels valid in both (NaN when there are none).
        bad_px_percent: % of valid-GT pixels off by more than `bad_px`, invalid predictions counted as bad.
        density_percent: % of valid-GT pixels with a valid prediction.
        bad_px: the threshold used, in px.
        n_valid_gt: number of valid ground-truth pixels.
    """

    epe_px: float
    bad_px_percent: float
    density_percent: float
    bad_px: float
    n_valid_gt: int


def stereo_errors(
    pred_disparity_px: np.ndarray, gt_disparity_px: np.ndarray, *, bad_px: float = 2.0
) -> StereoErrors:
    """Compare a prediction with ground truth.

    Args:
        pred_disparity_px: (H, W) float disparity in px; NaN or ±inf where invalid.
        gt_disparity_px: (H, W) float disparity in px; NaN or ±inf where unknown (Middlebury and
            scikit-image's `stereo_motorcycle` mark unknown pixels +inf).
        bad_px: error threshold of the bad-pixel rate, in px.

    Raises:
        ValueError: on shape mismatch, or when the ground truth has no valid pixel.
    """
    pred = np.asarray(pred_disparity_px, dtype=np.float64)
    gt = np.asarray(gt_disparity_px, dtype=np.float64)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be the same (H, W)")
    valid_gt = np.isfinite(gt)
    n_gt = int(valid_gt.sum())
    if n_gt == 0:
        raise ValueError("ground truth has no valid pixel")
    both = valid_gt & np.isfinite(pred)
    err = np.abs(pred[both] - gt[both])
    n_bad = (n_gt - int(both.sum())) + int((err > bad_px).sum())
    return StereoErrors(
        epe_px=float(err.mean()) if err.size else float("nan"),
        bad_px_percent=100.0 * n_bad / n_gt,
        density_percent=100.0 * int(both.sum()) / n_gt,
        bad_px=float(bad_px),
        n_valid_gt=n_gt,
    )
