"""Image features of FoundationStereo: an EdgeNeXt CNN with a frozen Depth Anything V2 side branch,
and the context network that seeds the GRUs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeler.models.dinov2_dpt import DinoDPT, vit_spec
from labeler.models.foundation_stereo.layers import ConvNormAct, RaftResidualBlock, UpConcat

EDGENEXT_CHANNELS = (48, 96, 160, 304)  # edgenext_small stage widths at 1/4 .. 1/32
_VIT_MULTIPLE = 112  # lcm(ViT patch 14, 16): the ViT input is resized to a multiple of this
_VIT_MAX_SIDE = 1344


def vit_input_size(
    h: int, w: int, *, multiple: int = _VIT_MULTIPLE, max_side: int = _VIT_MAX_SIDE
) -> tuple[int, int]:
    """Size the side branch resizes an (h, w) image to: each side rounded up to `multiple`; when a side
    exceeds `max_side`, the longer one becomes `max_side` and the other keeps the aspect ratio."""

    def up(v: float) -> int:
        return int(math.ceil(v / multiple) * multiple)

    rh, rw = up(h), up(w)
    if rh > max_side or rw > max_side:
        if rh > rw:
            rh, rw = max_side, up(rw * max_side / rh)
        else:
            rh, rw = up(rh * max_side / rw), max_side
    return rh, rw


class DepthAnythingBranch(nn.Module):
    """The frozen DAv2 model (`depth_anything`) used for its dense decoder features."""

    def __init__(self, vit: str) -> None:
        super().__init__()
        self.depth_anything = DinoDPT(vit)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised RGB (H, W multiples of 14) -> (B, features/2, H, W)."""
        return self.depth_anything.dense_features(x)


class StereoFeatures(nn.Module):
    """Multi-scale features of both images: EdgeNeXt-small (weights from the checkpoint) decoded back
    to 1/4 and fused with the ViT branch's features there.

    Outputs of `forward` for a (N, 3, H, W) normalised batch (H, W multiples of 32):
        ([f4 (N, 96 + Cv, H/4, W/4), f8 (N, 192, H/8, W/8), f16 (N, 320, H/16, W/16),
          f32 (N, 304, H/32, W/32)],
         vit (N, Cv, H/4, W/4)), with Cv = DPT features / 2 (32 for ViT-S, 128 for ViT-L).
    """

    def __init__(self, vit: str) -> None:
        super().__init__()
        import timm

        backbone = timm.create_model("edgenext_small", pretrained=False)
        stem, stages = backbone.stem, backbone.stages  # EdgeNeXt's stem and its four stages, 1/4 .. 1/32
        assert isinstance(stem, nn.Module) and isinstance(stages, nn.Sequential)  # timm types them loosely
        self.stem = stem
        self.stages = stages
        c = EDGENEXT_CHANNELS
        vit_ch = vit_spec(vit).dpt_features // 2
        self.dino = DepthAnythingBranch(vit)
        self.dino.requires_grad_(False)
        self.deconv32_16 = UpConcat(c[3], c[2], norm="instance")
        self.deconv16_8 = UpConcat(2 * c[2], c[1], norm="instance")
        self.deconv8_4 = UpConcat(2 * c[1], c[0], norm="instance")
        fused = 2 * c[0] + vit_ch
        self.conv4 = nn.Sequential(
            ConvNormAct(fused, fused, kernel_size=3, padding=1, norm="instance"),
            RaftResidualBlock(fused, fused, norm="instance"),
            RaftResidualBlock(fused, fused, norm="instance"),
        )
        self.out_channels = (fused, 2 * c[1], 2 * c[2], c[3])
        self.vit_channels = vit_ch

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        h, w = x.shape[-2:]
        self.dino.eval()
        with torch.no_grad():
            vit_in = F.interpolate(x, size=vit_input_size(h, w), mode="bicubic", align_corners=False)
            vit = self.dino(vit_in)
        vit = F.interpolate(vit, size=(h // 4, w // 4), mode="bilinear", align_corners=True)
        x4 = self.stages[0](self.stem(x))
        x8 = self.stages[1](x4)
        x16 = self.stages[2](x8)
        x32 = self.stages[3](x16)
        x16 = self.deconv32_16(x32, x16)
        x8 = self.deconv16_8(x16, x8)
        x4 = self.deconv8_4(x8, x4)
        x4 = self.conv4(torch.cat([x4, vit], dim=1))
        return [x4, x8, x16, x32], vit


class ContextNet(nn.Module):
    """Context encoder of the left image: a RAFT residual CNN to 1/4, fused with the ViT features, then
    heads at 1/4, 1/8 and 1/16. Each level gives two maps: the GRU's initial hidden state (pre-tanh)
    and its context input (pre-relu).

    `down` and `norm` exist in the release's state dict but take no part in the computation.
    """

    def __init__(self, vit_channels: int, *, hidden: int = 128, downsample: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(64)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=1 + (downsample > 2), padding=3)
        self.layer1 = self._pair(64, 64, 1)
        self.layer2 = self._pair(64, 96, 1 + (downsample > 1))
        self.layer3 = self._pair(96, 128, 1 + (downsample > 0))
        self.layer4 = self._pair(128, 128, 2)
        self.layer5 = self._pair(128, 128, 2)
        self.down = nn.Sequential(nn.Conv2d(128, 128, 4, stride=4), nn.BatchNorm2d(128))  # unused
        self.conv2 = ConvNormAct(128 + vit_channels, 128, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(256)  # unused
        self.outputs04 = nn.ModuleList(self._head(hidden, residual=True) for _ in range(2))
        self.outputs08 = nn.ModuleList(self._head(hidden, residual=True) for _ in range(2))
        self.outputs16 = nn.ModuleList(self._head(hidden, residual=False) for _ in range(2))

    @staticmethod
    def _pair(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            RaftResidualBlock(cin, cout, norm="batch", stride=stride),
            RaftResidualBlock(cout, cout, norm="batch"),
        )

    @staticmethod
    def _head(out: int, *, residual: bool) -> nn.Module:
        conv = nn.Conv2d(128, out, 3, padding=1)
        return nn.Sequential(RaftResidualBlock(128, 128, norm="batch"), conv) if residual else conv

    def forward(self, image: Tensor, vit: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Args: image (B, 3, H, W) normalised; vit (B, Cv, H/4, W/4).

        Returns:
            Per level (1/4, 1/8, 1/16): [hidden (B, 128, h, w), context (B, 128, h, w)].
        """
        x = F.relu(self.norm1(self.conv1(image)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.conv2(torch.cat([x, vit], dim=1))
        y = self.layer4(x)
        z = self.layer5(y)
        return (
            [head(x) for head in self.outputs04],
            [head(y) for head in self.outputs08],
            [head(z) for head in self.outputs16],
        )
