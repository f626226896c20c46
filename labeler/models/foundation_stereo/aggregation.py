"""Attentive hybrid cost filtering: a 3-D hourglass of axial-planar convolutions guided by image
features, plus a disparity transformer on a 4x-downsampled copy of the volume.

Volumes are (B, C, D, H, W) with D disparities at 1/4 resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeler.models.foundation_stereo.layers import AxialPlanarConv3d, ConvNormAct, FeatureGate


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(1, length, dim) float32 sine/cosine position table (even channels sine, odd cosine)."""
    position = torch.arange(0, length).float().unsqueeze(1)
    freq = (torch.arange(0, dim, 2).float() * (-(math.log(10000.0) / dim))).exp()[None]
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table.unsqueeze(0)


class SinusoidPosition(nn.Module):
    """Adds a fixed sinusoid table to (N, L, C) tokens; L may not exceed `max_len` (no parameters)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.table = sinusoid_table(max_len, dim)  # a plain attribute: not in the state dict

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.table.shape[1]:
            raise RuntimeError(
                f"{x.shape[1]} disparity tokens exceed the position table ({self.table.shape[1]})"
            )
        if self.table.device != x.device or self.table.dtype != x.dtype:
            self.table = self.table.to(device=x.device, dtype=x.dtype)
        return x + self.table[:, : x.shape[1]]


class HeadMixingAttention(nn.Module):
    """The release's disparity-transformer attention, reproduced as trained.

    Queries, keys and values are projected and split into heads as (N, L, heads, C/heads) and passed
    to scaled-dot-product attention in that layout, which treats the token axis L as a batch axis:
    each token's heads attend to each other, tokens do not attend across disparities. The released
    weights were trained with this, so it is kept (documented here rather than "fixed").
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, c = x.shape
        split = (n, length, self.num_heads, c // self.num_heads)
        q, k, v = (proj(x).view(split) for proj in (self.q_proj, self.k_proj, self.v_proj))
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).reshape(n, length, c))


class EncoderLayer(nn.Module):
    """Post-norm transformer layer: x = norm1(x + attn(x)); x = norm2(x + ffn(x)), GELU feed-forward."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = HeadMixingAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class DisparityTransformer(nn.Module):
    """Transformer over the disparity axis of each pixel's cost column.

    (B, C, D, H, W) -> (B, C, D, H, W); tokens are the D disparities of one pixel, C wide.
    """

    def __init__(self, dim: int, *, num_heads: int, num_layers: int, max_len: int) -> None:
        super().__init__()
        self.sa = nn.ModuleList(EncoderLayer(dim, num_heads, dim) for _ in range(num_layers))
        self.pos_embed0 = SinusoidPosition(dim, max_len)

    def forward(self, cv: Tensor) -> Tensor:
        b, c, d, h, w = cv.shape
        x = self.pos_embed0(cv.permute(0, 3, 4, 2, 1).reshape(b * h * w, d, c))
        for layer in self.sa:
            x = layer(x)
        return x.reshape(b, h, w, d, c).permute(0, 4, 3, 1, 2)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(cin, cout, kernel_size=3, stride=2, padding=1, dims=3), AxialPlanarConv3d(cout, cout)
    )


def _up(cin: int, cout: int) -> ConvNormAct:
    return ConvNormAct(cin, cout, kernel_size=4, stride=2, padding=1, dims=3, transposed=True)


def _merge(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        ConvNormAct(cin, cout, kernel_size=1, dims=3),
        AxialPlanarConv3d(cout, cout),
        AxialPlanarConv3d(cout, cout),
    )


class CostFiltering(nn.Module):
    """3-D hourglass over the cost volume (1/4 -> 1/32 and back), each scale gated by the left image's
    features, with the disparity transformer's output (from a 4x-downsampled volume) added at the end.

    Args:
        ch: volume channels C.
        feat_channels: channels of the left features at 1/4, 1/8, 1/16, 1/32.
        max_disp: full-resolution max disparity (the transformer sees max_disp / 16 tokens).
    """

    def __init__(self, ch: int, feat_channels: tuple[int, int, int, int], *, max_disp: int) -> None:
        super().__init__()
        self.conv1 = _down(ch, 2 * ch)
        self.conv2 = _down(2 * ch, 4 * ch)
        self.conv3 = _down(4 * ch, 6 * ch)
        self.conv3_up = _up(6 * ch, 4 * ch)
        self.conv2_up = _up(4 * ch, 2 * ch)
        self.conv1_up = _up(2 * ch, ch)
        self.conv_out = nn.Sequential(AxialPlanarConv3d(ch, ch), AxialPlanarConv3d(ch, ch))
        self.agg_0 = _merge(8 * ch, 4 * ch)
        self.agg_1 = _merge(4 * ch, 2 * ch)
        self.atts = nn.ModuleDict(
            {"4": DisparityTransformer(ch, num_heads=4, num_layers=4, max_len=max_disp // 16)}
        )
        self.conv_patch = nn.Sequential(
            nn.Conv3d(ch, ch, kernel_size=4, stride=4, groups=ch), nn.BatchNorm3d(ch)
        )
        f = feat_channels
        self.feature_att_8 = FeatureGate(2 * ch, f[1])
        self.feature_att_16 = FeatureGate(4 * ch, f[2])
        self.feature_att_32 = FeatureGate(6 * ch, f[3])
        self.feature_att_up_16 = FeatureGate(4 * ch, f[2])
        self.feature_att_up_8 = FeatureGate(2 * ch, f[1])

    def forward(self, cv: Tensor, feats: list[Tensor]) -> Tensor:
        """cv (B, C, D, H, W); feats: left features at 1/4..1/32. Returns (B, C, D, H, W)."""
        s8 = self.feature_att_8(self.conv1(cv), feats[1])
        s16 = self.feature_att_16(self.conv2(s8), feats[2])
        s32 = self.feature_att_32(self.conv3(s16), feats[3])
        s16 = self.agg_0(torch.cat([self.conv3_up(s32), s16], dim=1))
        s16 = self.feature_att_up_16(s16, feats[2])
        s8 = self.agg_1(torch.cat([self.conv2_up(s16), s8], dim=1))
        s8 = self.feature_att_up_8(s8, feats[1])
        out = self.conv1_up(s8)
        coarse = self.atts["4"](self.conv_patch(cv))
        out = out + F.interpolate(coarse, scale_factor=4, mode="trilinear", align_corners=False)
        return self.conv_out(out)
