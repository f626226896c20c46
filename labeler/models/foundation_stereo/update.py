"""Iterative refinement: a three-level ConvGRU whose levels choose, per pixel, between a 1x1 and a 3x3
gate (by the spatial attention of the context), and a head that predicts the disparity update.

All maps are (B, C, h, w) at 1/4, 1/8 and 1/16 resolution; disparities in 1/4-resolution px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeler.models.foundation_stereo.layers import ConvNeXtBlock


def _pool2x(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def _resize_like(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=True)


class MotionEncoder(nn.Module):
    """Encodes the looked-up costs and the current disparity; the disparity is appended as the last channel.

    (B, Ccorr, h, w), (B, 1, h, w) -> (B, 128, h, w).
    """

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 256, 3, padding=1)
        self.convd1 = nn.Conv2d(1, 64, 7, padding=3)
        self.convd2 = nn.Conv2d(64, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 256, 128 - 1, 3, padding=1)

    def forward(self, disp: Tensor, corr: Tensor) -> Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        d = F.relu(self.convd2(F.relu(self.convd1(disp))))
        return torch.cat([F.relu(self.conv(torch.cat([c, d], dim=1))), disp], dim=1)


class GateGRU(nn.Module):
    """Convolutional GRU cell whose z and r gates read a precomputed [input, hidden] map."""

    def __init__(self, hidden: int, inp: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.convz = nn.Conv2d(hidden + inp, hidden, kernel_size, padding=pad)
        self.convr = nn.Conv2d(hidden + inp, hidden, kernel_size, padding=pad)
        self.convq = nn.Conv2d(hidden + inp, hidden, kernel_size, padding=pad)

    def forward(self, h: Tensor, x: Tensor, xh: Tensor) -> Tensor:
        z = torch.sigmoid(self.convz(xh))
        r = torch.sigmoid(self.convr(xh))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class SelectiveGRU(nn.Module):
    """Blends a 1x1-kernel and a 3x3-kernel GRU by a per-pixel attention weight `att` in (0, 1)."""

    def __init__(self, hidden: int, inp: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(nn.Conv2d(inp, inp, 3, padding=1), nn.ReLU())
        self.conv1 = nn.Sequential(nn.Conv2d(inp + hidden, inp + hidden, 3, padding=1), nn.ReLU())
        self.small_gru = GateGRU(hidden, inp, 1)
        self.large_gru = GateGRU(hidden, inp, 3)

    def forward(self, att: Tensor, h: Tensor, *inputs: Tensor) -> Tensor:
        x = self.conv0(torch.cat(inputs, dim=1))
        xh = self.conv1(torch.cat([x, h], dim=1))
        return self.small_gru(h, x, xh) * att + self.large_gru(h, x, xh) * (1 - att)


class DispHead(nn.Module):
    """(B, 128, h, w) hidden state -> (B, 1, h, w) disparity update."""

    def __init__(self, ch: int = 128) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.ReLU(),
            ConvNeXtBlock(ch),
            ConvNeXtBlock(ch),
            nn.Conv2d(ch, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UpdateBlock(nn.Module):
    """One refinement step over the GRU pyramid.

    Args:
        hidden: GRU width (128).
        n_levels: GRU levels (1 to 3).
        corr_channels: channels of the cost lookup.
    """

    def __init__(self, hidden: int, *, n_levels: int, corr_channels: int) -> None:
        super().__init__()
        self.n_levels = n_levels
        self.encoder = MotionEncoder(corr_channels)
        if n_levels == 3:
            self.gru16 = SelectiveGRU(hidden, 2 * hidden)
        if n_levels >= 2:
            self.gru08 = SelectiveGRU(hidden, 2 * hidden + hidden * (n_levels == 3))
        self.gru04 = SelectiveGRU(hidden, 2 * hidden + hidden * (n_levels > 1))
        self.disp_head = DispHead(hidden)
        self.mask = nn.Sequential(
            nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU()
        )

    def forward(
        self, net: list[Tensor], inp: list[Tensor], corr: Tensor, disp: Tensor, att: list[Tensor]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Args:
            net: hidden states at 1/4, 1/8, 1/16 (updated and returned as a new list).
            inp: context inputs, same levels.
            corr: (B, Ccorr, h, w) cost lookup at 1/4.
            disp: (B, 1, h, w) current disparity at 1/4.
            att: spatial attention per level, (B, 1, h, w).

        Returns:
            (hidden states, mask features (B, 32, h, w) for upsampling, disparity update (B, 1, h, w)).
        """
        net = list(net)
        if self.n_levels == 3:
            net[2] = self.gru16(att[2], net[2], inp[2], _pool2x(net[1]))
        if self.n_levels == 3:
            net[1] = self.gru08(att[1], net[1], inp[1], _pool2x(net[0]), _resize_like(net[2], net[1]))
        elif self.n_levels == 2:
            net[1] = self.gru08(att[1], net[1], inp[1], _pool2x(net[0]))
        motion = torch.cat([inp[0], self.encoder(disp, corr)], dim=1)
        if self.n_levels > 1:
            net[0] = self.gru04(att[0], net[0], motion, _resize_like(net[1], net[0]))
        else:
            net[0] = self.gru04(att[0], net[0], motion)
        delta = self.disp_head(net[0])
        mask = 0.25 * self.mask(net[0])
        return net, mask, delta
