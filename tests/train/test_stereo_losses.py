"""train-stereo losses and augmentation geometry on scenes whose disparities are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.testing.scenes import square_scene
from labeler.train.stereo.data import forward_warp
from labeler.train.stereo.losses import (
    occluded,
    photometric_error,
    sequence_loss,
    smoothness_loss,
    warp_right,
    weighted_mean,
)

H, W = 96, 128
SQUARE = (slice(H // 4, 3 * H // 4), slice(W // 3, 3 * W // 4))  # square_scene's square, at 14 px over 5 px


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _image(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255


def test_weighted_mean_leaves_invalid_pixels_out():
    err = torch.tensor([[1.0, 2.0, 100.0]], requires_grad=True)
    w = torch.tensor([[1.0, 3.0, 0.0]])
    assert float(weighted_mean(err, w).detach()) == pytest.approx((1 + 6) / 4)
    none = weighted_mean(err, torch.zeros_like(w))
    none.backward()
    assert float(none) == 0.0 and err.grad is not None and float(err.grad.abs().sum()) == 0.0


def test_sequence_loss_weights_iterations_exponentially():
    """Errors 1, 2, 3 px at 3 iterations, initial off by 0.5 px: 0.5^2/2 + g'^2*1 + g'*2 + 3, g' = 0.9^7.5."""
    target = torch.full((1, 4, 4), 10.0)
    weight = torch.ones(1, 4, 4)
    its = [target + e for e in (1.0, 2.0, 3.0)]
    loss = sequence_loss(target + 0.5, its, target, weight, gamma=0.9)
    g = 0.9 ** (15 / 2)
    assert float(loss) == pytest.approx(0.125 + g**2 * 1 + g * 2 + 3, rel=1e-6)
    # targets beyond the cost volume do not count; so only the weighted pixels set the value
    far = target.clone()
    far[0, 0] = 500.0
    assert float(sequence_loss(far + 0.5, [far + 1], far, weight, max_disp=416)) == pytest.approx(0.125 + 1)


def test_warp_at_the_true_disparity_reconstructs_the_left_view():
    pair = square_scene(H, W)
    left, right = _image(pair.left), _image(pair.right)
    d = _t(pair.disparity_px)[None]
    warped, inside = warp_right(right, d)
    ok = inside[0] & ~occluded(d)[0]
    assert float((warped - left).abs().mean(1)[0][ok].mean()) < 0.01  # bilinear shifts of the textures
    true_err, valid = photometric_error(left, right, d)
    wrong_err, _ = photometric_error(left, right, d + 3)
    assert float(true_err[valid].mean()) < 0.25 * float(wrong_err[valid].mean())


def test_left_right_check_finds_the_occluded_band():
    """Background pixels (5 px) within 14 - 5 = 9 px left of the square (14 px) match right-image pixels
    the square covers: exactly those are occluded."""
    pair = square_scene(H, W)
    occ = occluded(_t(pair.disparity_px)[None])[0].numpy()
    x0 = SQUARE[1].start
    expected = np.zeros((H, W), bool)
    expected[SQUARE[0], x0 - 9 : x0] = True
    assert (occ == expected).all()


def test_forward_warp_gives_the_right_view_disparity():
    """The right view: the square at x - 14, the wall elsewhere at 5 px, and NaN where the wall is seen
    only by the right camera (9 px right of the square's right-view position, hidden in the left view)."""
    pair = square_scene(H, W)
    conf = np.ones((H, W), np.float32)
    d_right, c_right = forward_warp(pair.disparity_px, conf)
    rows = SQUARE[0]
    x0, x1 = SQUARE[1].start, SQUARE[1].stop
    assert np.allclose(d_right[rows, x0 - 14 : x1 - 14], 14)
    assert np.isnan(d_right[rows, x1 - 14 : x1 - 5]).all()
    assert np.allclose(d_right[rows, x1 - 5 : W - 5], 5) and np.allclose(d_right[: H // 4 - 1, : W - 5], 5)
    assert np.isnan(d_right[:, W - 5 :]).all()  # no left pixel lands there
    assert (np.isfinite(c_right) == np.isfinite(d_right)).all()


def test_smoothness_is_edge_aware():
    flat = torch.full((1, 1, H, W), 0.5).expand(1, 3, H, W)
    step = torch.full((1, 1, H, W), 5.0)
    step[..., W // 2 :] = 10.0
    edge = flat.clone()
    edge[..., W // 2 :] = 1.0
    assert float(smoothness_loss(torch.full((1, H, W), 7.0), flat)) == 0.0
    assert float(smoothness_loss(step, edge)) < 0.7 * float(smoothness_loss(step, flat))
