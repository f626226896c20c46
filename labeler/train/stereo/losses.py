"""FoundationStereo's training losses. Shapes: disparities (B, 1, H, W) or (B, H, W) px, images (B, 3, H, W)
in [0, 1]; weights (B, H, W) >= 0, 0 marking an invalid pixel (it is left out, never divided by an epsilon).

- `sequence_loss`: distillation from the teacher's disparity, per-pixel weighted by its confidence, over
  every GRU iteration with exponentially growing weights (RAFT-style), plus a smooth-L1 term on the cost
  volume's initial disparity (as FoundationStereo's training does);
- `photometric_error`: the right image warped to the left by the predicted disparity, SSIM + L1, over the
  pixels that both views see (in view, not occluded: a left-right check of the predicted disparity);
- `smoothness_loss`: edge-aware smoothness of the mean-normalised disparity (small where the image has an
  edge, so depth steps stay sharp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SEQUENCE_REFERENCE_ITERS = 15  # the decay is rescaled so that `gamma` means the same at any iteration count


def _flat(x: Tensor) -> Tensor:
    return x[:, 0] if x.dim() == 4 else x


def weighted_mean(err: Tensor, weight: Tensor) -> Tensor:
    """sum(w * err) / sum(w) over pixels of weight > 0; exactly 0 (still in the graph) when there are none."""
    valid = weight > 0
    if not bool(valid.any()):
        return (err * 0).sum()
    w = weight[valid]
    return (err[valid] * w).sum() / w.sum()


def sequence_loss(
    initial: Tensor,
    iterations: list[Tensor],
    target: Tensor,
    weight: Tensor,
    *,
    gamma: float = 0.9,
    max_disp: float | None = None,
) -> Tensor:
    """smooth-L1(initial) + sum_k gamma'^(n-1-k) L1(iteration k), each a confidence-weighted mean.

    gamma' = gamma^(15 / (n - 1)) (RAFT-Stereo's rescaling), so the last iteration weighs 1 and the first
    gamma^15 whatever n is. Targets at or beyond `max_disp` (outside the cost volume) are left out.
    """
    w = weight
    if max_disp is not None:
        w = torch.where(target < max_disp, w, torch.zeros_like(w))
    n = len(iterations)
    g = gamma ** (SEQUENCE_REFERENCE_ITERS / max(n - 1, 1))
    total = weighted_mean(F.smooth_l1_loss(_flat(initial), target, reduction="none"), w)
    for k, d in enumerate(iterations):
        total = total + g ** (n - 1 - k) * weighted_mean((_flat(d) - target).abs(), w)
    return total


def warp_right(right: Tensor, disparity: Tensor) -> tuple[Tensor, Tensor]:
    """The right image sampled at x - d for every left pixel (bilinear), and (B, H, W) bool: x - d inside."""
    b, _, h, w = right.shape
    d = _flat(disparity)
    xs = torch.arange(w, device=right.device, dtype=d.dtype).view(1, 1, w) - d
    ys = torch.arange(h, device=right.device, dtype=d.dtype).view(1, h, 1).expand(b, h, w)
    grid = torch.stack([2 * xs / max(w - 1, 1) - 1, 2 * ys / max(h - 1, 1) - 1], dim=-1)
    warped = F.grid_sample(
        right, grid.to(right.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return warped, (xs >= 0) & (xs <= w - 1)


@torch.no_grad()
def occluded(disparity: Tensor, *, tolerance_px: float = 1.0) -> Tensor:
    """(B, H, W) bool: left pixels whose match in the right view is hidden by a nearer surface.

    Left-right check of one disparity map: its right-view disparity is made by forward warping (each left
    pixel lands at floor(x - d + 1/2), the largest disparity wins), then a left pixel is occluded when the
    right view's disparity at its match exceeds its own by more than `tolerance_px`.
    """
    d = _flat(disparity).float()
    b, h, w = d.shape
    xs = torch.arange(w, device=d.device).view(1, 1, w)
    u = torch.floor(xs - d + 0.5).long()  # not round: half-to-even folds d = k + 0.5 into pairs
    inside = (u >= 0) & (u < w)
    uc = u.clamp(0, w - 1)
    right = torch.full_like(d, -1.0)
    right = right.scatter_reduce(2, uc, torch.where(inside, d, torch.full_like(d, -1.0)), reduce="amax")
    seen = torch.gather(right, 2, uc)
    return inside & (seen - d > tolerance_px)


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """(B, C, H, W) structural similarity over 3x3 windows (reflect-padded), in [-1, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sy = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sx + sy + c2))


def photometric_error(
    left: Tensor, right: Tensor, disparity: Tensor, *, ssim_share: float = 0.85, occlusion_px: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Per pixel share * (1 - SSIM) / 2 + (1 - share) * |L1| of the left image against the warped right one.

    Returns:
        (error (B, H, W), valid (B, H, W) bool: the match is inside the right image and not occluded).
    """
    warped, inside = warp_right(right, disparity)
    ssim = ((1 - ssim_map(left, warped)) / 2).clamp(0, 1).mean(1)
    l1 = (left - warped).abs().mean(1)
    err = ssim_share * ssim + (1 - ssim_share) * l1
    return err, inside & ~occluded(disparity, tolerance_px=occlusion_px)


def smoothness_loss(disparity: Tensor, image: Tensor) -> Tensor:
    """mean(|dx d*| exp(-|dx I|) + |dy d*| exp(-|dy I|)), d* = d / its per-image mean (scale-free)."""
    d = _flat(disparity)
    d = d / d.mean(dim=(1, 2), keepdim=True).abs().clamp_min(1.0)  # a floor of 1 px: no blow-up near 0
    gx = image[..., :, 1:] - image[..., :, :-1]
    gy = image[..., 1:, :] - image[..., :-1, :]
    wx = torch.exp(-gx.abs().mean(1))
    wy = torch.exp(-gy.abs().mean(1))
    return (wx * (d[..., :, 1:] - d[..., :, :-1]).abs()).mean() + (
        wy * (d[..., 1:, :] - d[..., :-1, :]).abs()
    ).mean()
