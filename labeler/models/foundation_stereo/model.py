"""FoundationStereo (Wen et al., CVPR 2025), inference path, in the release's state-dict layout.

Pipeline for a rectified pair (B, 3, H, W), float RGB in [0, 255], H and W multiples of 32:

1. features of both images (EdgeNeXt + Depth Anything V2 branch), 1/4 .. 1/32;
2. hybrid cost volume at 1/4: group-wise correlation (8 groups) + concatenation of projected features;
3. attentive hybrid cost filtering (3-D hourglass + disparity transformer);
4. initial disparity = expectation of the softmax over the filtered volume;
5. `iters` ConvGRU refinements, each reading the filtered volume and a correlation around the estimate;
6. convex upsampling of the 1/4 disparity with weights predicted at 1/2.

Disparities are left x minus right x, in px of the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labeler.models.dinov2_dpt import vit_spec
from labeler.models.foundation_stereo.aggregation import CostFiltering
from labeler.models.foundation_stereo.extractor import ContextNet, StereoFeatures
from labeler.models.foundation_stereo.layers import (
    ChannelAttention,
    ConvNormAct,
    FeatureGate,
    ResBlock,
    SpatialAttention,
    UpConcat,
)
from labeler.models.foundation_stereo.release import FoundationStereoArgs
from labeler.models.foundation_stereo.update import UpdateBlock
from labeler.models.foundation_stereo.volume import (
    CostLookup,
    concat_volume,
    expected_disparity,
    group_correlation_volume,
)

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_GROUPS = 8
_VOLUME_CH = 28
_CONCAT_CH = 12
PAD_MULTIPLE = 32


def normalize_rgb(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 255] -> ImageNet-normalised float."""
    mean = torch.tensor(_MEAN, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std = torch.tensor(_STD, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return ((image / 255.0 - mean) / std).contiguous()


@dataclass(frozen=True)
class Padding:
    """Replicate-padding of an image to a multiple of `PAD_MULTIPLE`, split evenly between the two
    sides of each axis (the odd pixel goes right / bottom), as the release's demo does."""

    left: int
    right: int
    top: int
    bottom: int

    @classmethod
    def to_multiple(cls, h: int, w: int, multiple: int = PAD_MULTIPLE) -> Padding:
        ph, pw = -h % multiple, -w % multiple
        return cls(pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def pad(self, *xs: Tensor) -> list[Tensor]:
        """Pad (B, C, H, W) tensors."""
        return [F.pad(x, (self.left, self.right, self.top, self.bottom), mode="replicate") for x in xs]

    def unpad(self, x: Tensor) -> Tensor:
        """Crop a padded (..., H', W') tensor back."""
        h, w = x.shape[-2:]
        return x[..., self.top : h - self.bottom, self.left : w - self.right]


class StereoEstimate(NamedTuple):
    """Output of `FoundationStereo.estimate`.

    Attributes:
        disparity: (B, 1, H, W) float32, px.
        last_update: (B, 1, H, W) float32, |change| of the disparity in the last GRU iteration, px at
            full resolution (bilinearly upsampled from 1/4): small where the refinement converged.
    """

    disparity: Tensor
    last_update: Tensor


class StereoSequence(NamedTuple):
    """Output of `FoundationStereo.estimate_sequence` (training: a loss on every GRU iteration).

    Attributes:
        initial: (B, 1, H, W) float32 px, the cost volume's initial disparity (bilinearly upsampled from 1/4).
        iterations: one (B, 1, H, W) float32 px disparity per GRU iteration (convex-upsampled); the last
            is what `estimate` returns.
    """

    initial: Tensor
    iterations: list[Tensor]


def convex_upsample(disp: Tensor, weights: Tensor) -> Tensor:
    """Upsample 4x as a per-pixel convex combination of the 3x3 low-resolution neighbourhood.

    Args:
        disp: (B, 1, h, w), already in full-resolution px.
        weights: (B, 9, 4h, 4w), summing to one over the 9 neighbours.

    Returns:
        (B, 1, 4h, 4w).
    """
    b, _, h, w = disp.shape
    neighbours = F.unfold(disp, 3, padding=1).reshape(b, 9, h, w)
    neighbours = F.interpolate(neighbours, size=(4 * h, 4 * w), mode="nearest")
    return (neighbours * weights).sum(dim=1, keepdim=True)


class FoundationStereo(nn.Module):
    """The FoundationStereo network. Children are named as in the release, so its checkpoints load
    strictly; `stem_4` and `context_zqr_convs` are in the release's state dict but unused at inference.
    """

    def __init__(self, args: FoundationStereoArgs) -> None:
        super().__init__()
        self.args = args
        hidden = args.hidden_dims[0]
        radius = args.corr_radius
        vit_ch = vit_spec(args.vit_size).dpt_features // 2
        self.cnet = ContextNet(vit_ch, hidden=hidden, downsample=args.n_downsample)
        corr_ch = args.corr_levels * (2 * radius + 1) * (_VOLUME_CH + 1)
        self.update_block = UpdateBlock(hidden, n_levels=args.n_gru_layers, corr_channels=corr_ch)
        self.sam = SpatialAttention()
        self.cam = ChannelAttention(hidden)
        self.context_zqr_convs = nn.ModuleList(
            nn.Conv2d(args.hidden_dims[i], 3 * args.hidden_dims[i], 3, padding=1)
            for i in range(args.n_gru_layers)
        )
        self.feature = StereoFeatures(args.vit_size)
        feat_ch = self.feature.out_channels
        self.proj_cmb = nn.Conv2d(feat_ch[0], _CONCAT_CH, 1)
        self.stem_2 = nn.Sequential(
            ConvNormAct(3, 32, kernel_size=3, stride=2, padding=1, norm="instance"),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.InstanceNorm2d(32),
            nn.ReLU(),
        )
        self.stem_4 = nn.Sequential(
            ConvNormAct(32, 48, kernel_size=3, stride=2, padding=1, norm="instance"),
            nn.Conv2d(48, 48, 3, padding=1, bias=False),
            nn.InstanceNorm2d(48),
            nn.ReLU(),
        )
        self.spx_2_gru = UpConcat(32, 32, norm="none")
        self.spx_gru = nn.Sequential(nn.ConvTranspose2d(64, 9, kernel_size=4, stride=2, padding=1))
        self.corr_stem = nn.Sequential(
            nn.Conv3d(_GROUPS + 2 * _CONCAT_CH, _VOLUME_CH, 1),
            ConvNormAct(_VOLUME_CH, _VOLUME_CH, kernel_size=3, padding=1, dims=3),
            ResBlock(_VOLUME_CH, dims=3),
            ResBlock(_VOLUME_CH, dims=3),
        )
        self.corr_feature_att = FeatureGate(_VOLUME_CH, feat_ch[0])
        self.cost_agg = CostFiltering(_VOLUME_CH, feat_ch, max_disp=args.max_disp)
        self.classifier = nn.Sequential(
            ConvNormAct(_VOLUME_CH, _VOLUME_CH // 2, kernel_size=3, padding=1, dims=3),
            ResBlock(_VOLUME_CH // 2, dims=3),
            nn.Conv3d(_VOLUME_CH // 2, 1, 7, padding=3),
        )

    def forward(
        self, left: Tensor, right: Tensor, *, iters: int = 32, init_disp: Tensor | None = None
    ) -> Tensor:
        """Disparity of the left image.

        Args:
            left, right: (B, 3, H, W) float RGB in [0, 255], H and W multiples of 32.
            iters: GRU refinement iterations.
            init_disp: optional (B, 1, H/4, W/4) starting disparity in 1/4-resolution px (coarse-to-fine).

        Returns:
            (B, 1, H, W) float32 disparity in px.
        """
        return self.estimate(left, right, iters=iters, init_disp=init_disp).disparity

    def estimate(
        self, left: Tensor, right: Tensor, *, iters: int = 32, init_disp: Tensor | None = None
    ) -> StereoEstimate:
        """`forward`, also returning the size of the last GRU update (see `StereoEstimate`).

        Under an enclosing `torch.autocast`, the correlations and the cost lookup stay in float32 and
        the disparity is accumulated in float32, as in the release's mixed-precision mode.
        """
        if left.shape != right.shape or left.shape[-2] % PAD_MULTIPLE or left.shape[-1] % PAD_MULTIPLE:
            raise ValueError(
                f"left/right must be equal (B, 3, H, W) with H, W multiples of 32, got "
                f"{tuple(left.shape)} and {tuple(right.shape)}"
            )
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        up, delta, _ = self._run(left, right, iters=iters, init_disp=init_disp, sequence=False)
        last = F.interpolate(4 * delta.float().abs(), scale_factor=4, mode="bilinear", align_corners=False)
        return StereoEstimate(disparity=up[-1], last_update=last)

    def estimate_sequence(self, left: Tensor, right: Tensor, *, iters: int) -> StereoSequence:
        """The disparity after every GRU iteration, and the initial one, for training.

        As in RAFT-style training, the estimate is detached before each cost lookup, so every iteration
        learns its own update; the gradient reaches the features through the lookups and the context.
        Same inputs as `estimate`.
        """
        if left.shape != right.shape or left.shape[-2] % PAD_MULTIPLE or left.shape[-1] % PAD_MULTIPLE:
            raise ValueError(
                f"left/right must be equal (B, 3, H, W) with H, W multiples of 32, got "
                f"{tuple(left.shape)} and {tuple(right.shape)}"
            )
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        ups, _, init = self._run(left, right, iters=iters, init_disp=None, sequence=True)
        initial = F.interpolate(4 * init.float(), scale_factor=4, mode="bilinear", align_corners=False)
        return StereoSequence(initial=initial, iterations=ups)

    def _run(
        self, left: Tensor, right: Tensor, *, iters: int, init_disp: Tensor | None, sequence: bool
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """(upsampled disparities: the last only, or every iteration's with `sequence`; the last 1/4
        update; the initial 1/4 disparity)."""
        b = left.shape[0]
        d4 = self.args.max_disp // 4
        left_n, right_n = normalize_rgb(left), normalize_rgb(right)

        feats, vit = self.feature(torch.cat([left_n, right_n], dim=0))
        vit = vit[:b]
        fl = [f[:b] for f in feats]
        fr = [f[b:] for f in feats]
        stem2 = self.stem_2(left_n)

        gwc = group_correlation_volume(fl[0], fr[0], d4, _GROUPS)
        cat = concat_volume(self.proj_cmb(fl[0]), self.proj_cmb(fr[0]), d4)
        volume = self.corr_stem(torch.cat([gwc, cat], dim=1))
        volume = self.corr_feature_att(volume, fl[0])
        volume = self.cost_agg(volume, fl)
        if init_disp is None:
            prob = F.softmax(self.classifier(volume).squeeze(1), dim=1)
            init_disp = expected_disparity(prob)

        levels = self.cnet(left_n, vit)
        net = [torch.tanh(hidden) for hidden, _ in levels]
        inp = [F.relu(context) for _, context in levels]
        inp = [self.cam(x) * x for x in inp]
        att = [self.sam(x) for x in inp]

        lookup = CostLookup(fl[0], fr[0], volume, levels=self.args.corr_levels, radius=self.args.corr_radius)
        _, _, h, w = fl[0].shape
        columns = (
            torch.arange(w, dtype=torch.float32, device=left.device).reshape(1, 1, w, 1).repeat(b, h, 1, 1)
        )
        disp = init_disp.float()
        delta = torch.zeros_like(disp)
        mask_feat = None
        ups = []
        for _ in range(iters):
            if sequence:
                disp = disp.detach()
            corr = lookup(disp, columns)
            net, mask_feat, delta = self.update_block(net, inp, corr, disp, att)
            disp = disp + delta.float()
            if sequence:
                ups.append(self.upsample(disp, mask_feat, stem2))
        assert mask_feat is not None
        if not sequence:
            ups.append(self.upsample(disp, mask_feat, stem2))
        return ups, delta, init_disp

    def upsample(self, disp: Tensor, mask_feat: Tensor, stem2: Tensor) -> Tensor:
        """(B, 1, h, w) 1/4 disparity -> (B, 1, 4h, 4w) float32 in full-resolution px."""
        weights = F.softmax(self.spx_gru(self.spx_2_gru(mask_feat.float(), stem2.float())), dim=1)
        return convex_upsample(4.0 * disp.float(), weights).float()

    def forward_hierarchical(
        self, left: Tensor, right: Tensor, *, iters: int = 32, ratio: float = 0.5
    ) -> Tensor:
        """Coarse-to-fine `forward` (see `estimate_hierarchical`); (B, 1, H, W) float32 disparity in px."""
        return self.estimate_hierarchical(left, right, iters=iters, ratio=ratio).disparity

    def estimate_hierarchical(
        self, left: Tensor, right: Tensor, *, iters: int = 32, ratio: float = 0.5
    ) -> StereoEstimate:
        """Coarse-to-fine: a full pass at `ratio` scale seeds the full-resolution pass (images over ~1K px,
        where the cost volume's `max_disp` or the context at 1/4 falls short).

        Args:
            left, right: (B, 3, H, W) float RGB in [0, 255], H and W multiples of 32.
            iters: GRU iterations of each pass.
            ratio: scale of the coarse pass.
        """
        h, w = left.shape[-2:]
        small = [
            F.interpolate(x, scale_factor=ratio, mode="bilinear", align_corners=False) for x in (left, right)
        ]
        pad = Padding.to_multiple(*small[0].shape[-2:])
        coarse = pad.unpad(self.forward(*pad.pad(*small), iters=iters).float())
        coarse = (F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True) * (1 / ratio)).clip(
            0, None
        )
        init = F.interpolate(coarse, scale_factor=0.25, mode="bilinear", align_corners=True) * 0.25
        return self.estimate(left, right, iters=iters, init_disp=init)
