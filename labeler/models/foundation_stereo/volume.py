"""Cost volumes at 1/4 resolution and the lookup that feeds the GRU.

Shapes: features (B, C, H, W) at 1/4; volumes (B, C', D, H, W) with D = max_disp / 4 candidate
disparities 0..D-1 (in 1/4-resolution px); entry d at column x compares left x with right x - d, and
is zero where x - d falls outside the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def group_correlation_volume(left: Tensor, right: Tensor, max_disp: int, groups: int) -> Tensor:
    """Group-wise correlation: per channel group, the cosine similarity of left and shifted right features.

    Computed in float32 whatever the autocast state.

    Args:
        left, right: (B, C, H, W) features, C divisible by `groups`.
        max_disp: D, number of disparities.
        groups: G.

    Returns:
        (B, G, D, H, W) float32 in [-1, 1].
    """
    b, c, h, w = left.shape
    if c % groups:
        raise ValueError(f"{c} feature channels do not split into {groups} groups")
    with torch.autocast(left.device.type, enabled=False):
        lg = F.normalize(left.float().reshape(b, groups, c // groups, h, w), dim=2)
        rg = F.normalize(right.float().reshape(b, groups, c // groups, h, w), dim=2)
        volume = lg.new_zeros(b, groups, max_disp, h, w)
        volume[:, :, 0] = (lg * rg).sum(dim=2)
        for d in range(1, min(max_disp, w)):
            volume[:, :, d, :, d:] = (lg[..., d:] * rg[..., : w - d]).sum(dim=2)
    return volume


def concat_volume(left: Tensor, right: Tensor, max_disp: int) -> Tensor:
    """Concatenation volume: left features at every disparity stacked on the shifted right features.

    Args:
        left, right: (B, C, H, W).

    Returns:
        (B, 2C, D, H, W), same dtype as the inputs.
    """
    b, c, h, w = left.shape
    volume = left.new_zeros(b, 2 * c, max_disp, h, w)
    volume[:, :c] = left.unsqueeze(2)
    volume[:, c:, 0] = right
    for d in range(1, min(max_disp, w)):
        volume[:, c:, d, :, d:] = right[..., : w - d]
    return volume


def expected_disparity(prob: Tensor) -> Tensor:
    """(B, D, H, W) probabilities over disparities 0..D-1 -> (B, 1, H, W) their expectation."""
    values = torch.arange(prob.shape[1], dtype=prob.dtype, device=prob.device).reshape(1, -1, 1, 1)
    return (prob * values).sum(dim=1, keepdim=True)


def _sample_rows(table: Tensor, x: Tensor) -> Tensor:
    """Linear interpolation along the last axis with zeros outside, via `grid_sample` (corners aligned).

    Args:
        table: (N, C, 1, W).
        x: (N, 1, K, 1) positions in px, 0..W-1.

    Returns:
        (N, C, 1, K).
    """
    width = table.shape[-1]
    gx = 2 * x / (width - 1) - 1
    grid = torch.cat([gx, torch.zeros_like(gx)], dim=-1).to(table.dtype)
    # cuDNN's grid_sample fails from 65 536 rows (CUDNN_STATUS_NOT_SUPPORTED, PyTorch #88380): a batch of
    # 8 pairs with the left-right pass at 480x640 has 307 200. The release turns cuDNN off here too.
    with torch.backends.cudnn.flags(enabled=False):
        return F.grid_sample(table, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class CostLookup:
    """Looks up, around a disparity estimate, the filtered cost volume and a full-width correlation.

    Both are kept as pyramids (`levels` levels, halving the disparity/column axis), and sampled at
    2r+1 integer offsets around the estimate at each level.

    Args:
        left, right: (B, C, H, W) 1/4-resolution features (the correlation is cosine, in float32).
        volume: (B, Cv, D, H, W) filtered cost volume.
        levels: pyramid levels.
        radius: r.
    """

    def __init__(self, left: Tensor, right: Tensor, volume: Tensor, *, levels: int, radius: int) -> None:
        b, cv, d, h, w = volume.shape
        self.levels = levels
        self.offsets = torch.linspace(-radius, radius, 2 * radius + 1, device=volume.device).reshape(
            1, 1, -1, 1
        )
        with torch.autocast(left.device.type, enabled=False):
            lf = F.normalize(left.float(), dim=1).permute(0, 2, 3, 1)  # (B, H, W, C)
            rf = F.normalize(right.float(), dim=1).permute(0, 2, 1, 3)  # (B, H, C, W)
            corr = torch.matmul(lf, rf)  # (B, H, W1, W2): left column x against every right column
        geo = volume.float().permute(0, 3, 4, 1, 2).reshape(b * h * w, cv, 1, d)
        corr = corr.reshape(b * h * w, 1, 1, w)
        self.geo = [geo]
        self.corr = [corr]
        for _ in range(levels - 1):
            self.geo.append(F.avg_pool2d(self.geo[-1], (1, 2), stride=(1, 2)))
            self.corr.append(F.avg_pool2d(self.corr[-1], (1, 2), stride=(1, 2)))

    def __call__(self, disp: Tensor, columns: Tensor) -> Tensor:
        """Sample around `disp`.

        Args:
            disp: (B, 1, H, W) disparity in 1/4-resolution px.
            columns: (B, H, W, 1) x coordinate of each pixel, float.

        Returns:
            (B, levels * (Cv + 1) * (2r+1), H, W): per level, the volume samples (channel-major) then
            the correlation samples.
        """
        b, _, h, w = disp.shape
        flat_disp = disp.reshape(b * h * w, 1, 1, 1)
        flat_x = columns.reshape(b * h * w, 1, 1, 1)
        out = []
        for i in range(self.levels):
            step = 2**i
            at_disp = self.offsets + flat_disp / step  # (N, 1, 2r+1, 1) in volume px
            at_right = flat_x / step - flat_disp / step + self.offsets  # matching right column
            out.append(_sample_rows(self.geo[i], at_disp).reshape(b, h, w, -1))
            out.append(_sample_rows(self.corr[i], at_right).reshape(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()
