"""Small building blocks of FoundationStereo. Attribute names follow the release's state dict."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["batch", "instance", "none"]


def _norm(kind: Norm, ch: int, dims: int) -> nn.Module:
    """Batch norm (affine, running stats), instance norm (no parameters) or nothing."""
    if kind == "batch":
        return nn.BatchNorm3d(ch) if dims == 3 else nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm3d(ch) if dims == 3 else nn.InstanceNorm2d(ch)
    return nn.Identity()


def _conv(cin: int, cout: int, *, dims: int, transposed: bool = False, **kw: Any) -> nn.Module:
    cls: type[nn.Module]
    if dims == 3:
        cls = nn.ConvTranspose3d if transposed else nn.Conv3d
    else:
        cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    return cls(cin, cout, **kw)


class ConvNormAct(nn.Module):
    """Bias-free (transposed) convolution -> norm -> LeakyReLU(0.01), in 2-D or 3-D.

    Attributes `conv` and `bn` (whatever the norm) as in the release.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        *,
        kernel_size: int | tuple[int, ...],
        stride: int = 1,
        padding: int = 0,
        dims: int = 2,
        transposed: bool = False,
        norm: Norm = "batch",
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = _conv(
            cin,
            cout,
            dims=dims,
            transposed=transposed,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            bias=False,
        )
        self.bn = _norm(norm, cout, dims)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.leaky_relu(x, 0.01) if self.act else x


class AxialPlanarConv3d(nn.Module):
    """Separable 3-D convolution over a cost volume (B, C, D, H, W): a k x k spatial plane, then a
    `kernel_disp` x 1 x 1 axial pass along disparity; each followed by batch norm and ReLU."""

    def __init__(self, cin: int, cout: int, *, kernel_size: int = 3, kernel_disp: int = 17) -> None:
        super().__init__()
        k, kd = kernel_size, kernel_disp
        self.conv1 = nn.Sequential(
            nn.Conv3d(cin, cout, kernel_size=(1, k, k), padding=(0, k // 2, k // 2)),
            nn.BatchNorm3d(cout),
            nn.ReLU(),
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(cout, cout, kernel_size=(kd, 1, 1), padding=(kd // 2, 0, 0)),
            nn.BatchNorm3d(cout),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class ResBlock(nn.Module):
    """ResNet basic block, bias-free 3x3(x3) convolutions, stride 1, same width in and out."""

    def __init__(self, ch: int, *, dims: int = 2, norm: Norm = "batch") -> None:
        super().__init__()
        self.conv1 = _conv(ch, ch, dims=dims, kernel_size=3, padding=1, bias=False)
        self.bn1 = _norm(norm, ch, dims)
        self.conv2 = _conv(ch, ch, dims=dims, kernel_size=3, padding=1, bias=False)
        self.bn2 = _norm(norm, ch, dims)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


class RaftResidualBlock(nn.Module):
    """RAFT-style residual block (3x3 convolutions with bias); a strided or widening block projects the
    shortcut with a 1x1 convolution. The shortcut norm is registered both as `norm3` and inside
    `downsample`, as in the release's state dict."""

    def __init__(self, cin: int, cout: int, *, norm: Norm, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = _norm(norm, cout, 2)
        self.norm2 = _norm(norm, cout, 2)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.norm3 = _norm(norm, cout, 2)
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), self.norm3)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


class UpConcat(nn.Module):
    """2x transposed convolution, concatenation with a skip of the same width, then a merge block.

    With `norm="instance"` the merge is a `ResBlock` (the feature decoder), with `"none"` a plain
    `ConvNormAct` (the upsampling-weight branch).
    """

    def __init__(self, cin: int, cout: int, *, norm: Literal["instance", "none"]) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, kernel_size=4, stride=2, padding=1, transposed=True, norm=norm)
        self.conv2: nn.Module
        if norm == "instance":
            self.conv2 = ResBlock(2 * cout, norm="instance")
        else:
            self.conv2 = ConvNormAct(2 * cout, 2 * cout, kernel_size=3, padding=1, norm="none")

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.conv1(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv2(torch.cat([x, skip], dim=1))


class FeatureGate(nn.Module):
    """Gates a cost volume (B, Ccv, D, H, W) channel-wise per pixel with sigmoid(f(image features))."""

    def __init__(self, cv_ch: int, feat_ch: int) -> None:
        super().__init__()
        self.feat_att = nn.Sequential(
            ConvNormAct(feat_ch, feat_ch // 2, kernel_size=1), nn.Conv2d(feat_ch // 2, cv_ch, 1)
        )

    def forward(self, cv: Tensor, feat: Tensor) -> Tensor:
        return torch.sigmoid(self.feat_att(feat)).unsqueeze(2) * cv


class ChannelAttention(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1) weights in (0, 1) from average- and max-pooled descriptors."""

    def __init__(self, ch: int, ratio: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(ch, ch // ratio, 1, bias=False), nn.ReLU(), nn.Conv2d(ch // ratio, ch, 1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)) + self.fc(F.adaptive_max_pool2d(x, 1)))


class SpatialAttention(nn.Module):
    """(B, C, H, W) -> (B, 1, H, W) weights in (0, 1) from the channel mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.samconv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.samconv(stats))


class ConvNeXtBlock(nn.Module):
    """Depth-wise 7x7 conv -> pointwise MLP (GELU, 4x) -> layer scale, residual; no norm."""

    def __init__(self, ch: int, *, kernel_size: int = 7, expansion: int = 4) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((ch,), 1e-6))
        self.dwconv = nn.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2, groups=ch)
        self.pwconv1 = nn.Linear(ch, expansion * ch)
        self.pwconv2 = nn.Linear(expansion * ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)
