"""DINOv2 ViT (patch 14) with a DPT decoder, in the Depth Anything V2 parameter layout.

`DinoDPT` owns two children, `pretrained` (the ViT) and `depth_head` (the DPT decoder), whose
state-dict keys are exactly those of Depth Anything V2 checkpoints (`pretrained.blocks.3.attn.qkv.weight`,
`depth_head.scratch.refinenet1.out_conv.bias`, ...), so DAv2 weights, and the DAv2 branch that
FoundationStereo embeds under `feature.dino.depth_anything.*`, load strictly.

Three entry points, from the rawest to the final product:

- `DinoDPT.intermediate_features(x)`: normalised tokens of the tapped ViT blocks.
- `DinoDPT.dense_features(x)`: the decoder's last feature map (what FoundationStereo consumes).
- `DinoDPT.forward(x)`: a one-channel map (relative inverse depth with `output_activation="relu"`,
  metric depth up to `max_depth` with `"sigmoid"`, as DAv2's metric models).

Inputs are RGB images normalised with the ImageNet mean/std, (B, 3, H, W) float, H and W multiples of 14.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ViTName = Literal["vits", "vitb", "vitl", "vitg"]
OutputActivation = Literal["relu", "sigmoid", "identity"]

PATCH_SIZE = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_POS_EMBED_OFFSET = 0.1  # DINOv2 samples its position grid at (n + 0.1) / n_pretrained; kept for parity


@dataclass(frozen=True)
class ViTSpec:
    """One DINOv2 size and the DAv2 decoder that goes with it.

    Attributes:
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        ffn: "mlp" (GELU MLP) or "swiglu" (ViT-g).
        taps: indices of the blocks whose outputs feed the decoder, shallow to deep.
        dpt_features: width of the decoder's fusion path.
        dpt_channels: widths of the four reassembled feature maps.
    """

    embed_dim: int
    depth: int
    num_heads: int
    ffn: Literal["mlp", "swiglu"]
    taps: tuple[int, int, int, int]
    dpt_features: int
    dpt_channels: tuple[int, int, int, int]


VIT_SPECS: dict[str, ViTSpec] = {
    "vits": ViTSpec(384, 12, 6, "mlp", (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": ViTSpec(768, 12, 12, "mlp", (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": ViTSpec(1024, 24, 16, "mlp", (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
    "vitg": ViTSpec(1536, 40, 24, "swiglu", (9, 19, 29, 39), 384, (1536, 1536, 1536, 1536)),
}


def vit_spec(vit: str) -> ViTSpec:
    """The `ViTSpec` of a size name; ValueError naming the choices otherwise."""
    try:
        return VIT_SPECS[vit]
    except KeyError:
        raise ValueError(f"unknown ViT size {vit!r}; choose one of {', '.join(VIT_SPECS)}") from None


# ---------------------------------------------------------------- ViT


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, H/14 * W/14, C) patch tokens, row-major."""

    def __init__(self, embed_dim: int, patch_size: int = PATCH_SIZE) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, N, C) tokens, fused qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # (B, heads, N, C/heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two linear layers with a GELU between them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SiLU-gated feed-forward of ViT-g; hidden width 2/3 of the MLP's, rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        width = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * width)
        self.w3 = nn.Linear(width, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ViTBlock(nn.Module):
    """Pre-norm transformer block with layer-scaled residuals."""

    def __init__(self, dim: int, num_heads: int, ffn: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp: nn.Module = SwiGLU(dim, 4 * dim) if ffn == "swiglu" else Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoViT(nn.Module):
    """DINOv2 vision transformer, patch 14, pretrained on a 37x37 grid (518 px), no register tokens."""

    def __init__(self, spec: ViTSpec, *, pretrain_grid: int = 37) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.embed_dim = dim
        self.patch_size = PATCH_SIZE
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid * pretrain_grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training-time masking; unused here
        self.patch_embed = PatchEmbed(dim)
        self.blocks = nn.ModuleList(ViTBlock(dim, spec.num_heads, spec.ffn) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding(self, grid_h: int, grid_w: int, *, square_input: bool) -> Tensor:
        """(1, 1 + grid_h*grid_w, C) position embedding for a grid_h x grid_w patch grid.

        The pretrained grid is resampled bicubically with DINOv2's scale factors ((n + 0.1) / n_pre);
        it is used as stored only for a square input with the pretrained number of patches.
        """
        stored = self.pos_embed
        n_pre = stored.shape[1] - 1
        side = int(math.sqrt(n_pre))
        if grid_h * grid_w == n_pre and square_input:
            return stored
        table = stored.float()
        grid = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((grid_h + _POS_EMBED_OFFSET) / side, (grid_w + _POS_EMBED_OFFSET) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if grid.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(
                f"position grid resampled to {tuple(grid.shape[-2:])}, wanted {(grid_h, grid_w)}"
            )
        patches = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([table[:, :1], patches], dim=1).to(stored.dtype)

    def tokens(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, 1 + H/14*W/14, C) tokens (class token first) with positions added."""
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        patches = self.patch_embed(x)
        tok = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        pos = self.position_embedding(h // self.patch_size, w // self.patch_size, square_input=h == w)
        return tok + pos

    def intermediate_layers(self, x: Tensor, taps: tuple[int, ...]) -> list[tuple[Tensor, Tensor]]:
        """Final-norm'd outputs of the blocks in `taps`.

        Returns:
            One (patch_tokens (B, H/14*W/14, C), class_token (B, C)) pair per tap, in `taps` order.
        """
        tok = self.tokens(x)
        kept: dict[int, Tensor] = {}
        last = max(taps)
        for i, block in enumerate(self.blocks):
            tok = block(tok)
            if i in taps:
                kept[i] = tok
            if i == last:
                break
        out = []
        for i in taps:
            normed = self.norm(kept[i])
            out.append((normed[:, 1:], normed[:, 0]))
        return out


# ---------------------------------------------------------------- DPT decoder


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convolutions, optional batch norm after each."""

    def __init__(self, ch: int, use_bn: bool) -> None:
        super().__init__()
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(ch)
            self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(x))
        if self.use_bn:
            y = self.bn1(y)
        y = self.conv2(F.relu(y))
        if self.use_bn:
            y = self.bn2(y)
        return y + x


class FusionBlock(nn.Module):
    """Adds a refined skip to the coarser path, refines, upsamples (bilinear, corners aligned), 1x1 conv."""

    def __init__(self, ch: int, use_bn: bool) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(ch, ch, 1)
        self.resConfUnit1 = ResidualConvUnit(ch, use_bn)  # on the skip; unused by the deepest block
        self.resConfUnit2 = ResidualConvUnit(ch, use_bn)

    def forward(
        self, path: Tensor, skip: Tensor | None = None, *, size: tuple[int, int] | None = None
    ) -> Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class DPTScratch(nn.Module):
    """The DPT fusion path (`scratch.*` in DAv2 checkpoints): per-level 3x3 convs to `features` channels,
    four fusion blocks, and the output convs (`output_conv1` to features/2, `output_conv2` to the map)."""

    def __init__(
        self,
        features: int,
        channels: tuple[int, int, int, int],
        *,
        use_bn: bool,
        output_activation: OutputActivation,
        out_channels: int,
    ) -> None:
        super().__init__()
        # created in the order of the DAv2 layout (and of its random initialisation)
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = (
            nn.Conv2d(c, features, 3, padding=1, bias=False) for c in channels
        )
        self.refinenet1, self.refinenet2, self.refinenet3, self.refinenet4 = (
            FusionBlock(features, use_bn) for _ in range(4)
        )
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity}
        final: nn.Module = activations[output_activation]()
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, out_channels, 1),
            final,
            nn.Identity(),
        )


class DPTHead(nn.Module):
    """Dense prediction decoder: four token maps -> a feature map at 14x the patch grid -> one channel.

    Args:
        in_dim: ViT token width.
        features: fusion path width.
        channels: widths of the reassembled maps at 4x, 2x, 1x and 1/2x the patch grid.
        use_bn: batch norm inside the residual units.
        use_clstoken: concatenate the class token to every patch token (through a projection).
        output_activation: "relu" (relative inverse depth), "sigmoid" (metric depth / max_depth) or
            "identity" (logits, for non-depth maps).
        out_channels: channels of the output map (1 for depth; the layout of DAv2 checkpoints).
    """

    def __init__(
        self,
        in_dim: int,
        features: int,
        channels: tuple[int, int, int, int],
        *,
        use_bn: bool = False,
        use_clstoken: bool = False,
        output_activation: OutputActivation = "relu",
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        self.use_clstoken = use_clstoken
        self.projects = nn.ModuleList(nn.Conv2d(in_dim, c, 1) for c in channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        if use_clstoken:
            self.readout_projects = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * in_dim, in_dim), nn.GELU()) for _ in channels
            )
        self.scratch = DPTScratch(
            features, channels, use_bn=use_bn, output_activation=output_activation, out_channels=out_channels
        )

    def dense_features(self, layers: list[tuple[Tensor, Tensor]], grid: tuple[int, int]) -> Tensor:
        """Decode tapped tokens to the last feature map.

        Args:
            layers: four (patch_tokens (B, gh*gw, C), class_token (B, C)) pairs, shallow to deep.
            grid: (gh, gw) patch grid.

        Returns:
            (B, features/2, 14*gh, 14*gw) features.
        """
        gh, gw = grid
        maps = []
        for i, (tokens, cls) in enumerate(layers):
            if self.use_clstoken:
                tokens = self.readout_projects[i](torch.cat([tokens, cls[:, None].expand_as(tokens)], dim=-1))
            fmap = tokens.permute(0, 2, 1).reshape(tokens.shape[0], tokens.shape[-1], gh, gw)
            maps.append(self.resize_layers[i](self.projects[i](fmap)))
        s = self.scratch
        l1, l2, l3, l4 = (
            s.layer1_rn(maps[0]),
            s.layer2_rn(maps[1]),
            s.layer3_rn(maps[2]),
            s.layer4_rn(maps[3]),
        )
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out = s.output_conv1(path)
        return F.interpolate(
            out, size=(gh * PATCH_SIZE, gw * PATCH_SIZE), mode="bilinear", align_corners=True
        )

    def forward(self, layers: list[tuple[Tensor, Tensor]], grid: tuple[int, int]) -> Tensor:
        """(B, out_channels, 14*gh, 14*gw) output of the head, after its final activation."""
        return self.scratch.output_conv2(self.dense_features(layers, grid))


# ---------------------------------------------------------------- the model


class DinoDPT(nn.Module):
    """DINOv2 + DPT, Depth Anything V2 layout (`pretrained.*`, `depth_head.*`).

    Args:
        vit: "vits" | "vitb" | "vitl" | "vitg".
        output_activation: final activation of the head; "relu" for DAv2 relative depth, "sigmoid" for
            DAv2 metric depth.
        max_depth: with "sigmoid", the output is multiplied by this (metric models, in metres).
        use_bn: batch norm in the decoder's residual units.
        use_clstoken: class-token readout in the decoder.
        spec: sizes to use instead of `VIT_SPECS[vit]` (e.g. a tiny random-init model for tests);
            `vit` is then only a label.
    """

    def __init__(
        self,
        vit: ViTName = "vitl",
        *,
        output_activation: OutputActivation = "relu",
        max_depth: float = 1.0,
        use_bn: bool = False,
        use_clstoken: bool = False,
        spec: ViTSpec | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec if spec is not None else vit_spec(vit)
        self.vit_name = vit
        self.output_activation = output_activation
        self.max_depth = max_depth
        self.pretrained = DinoViT(self.spec)
        self.depth_head = DPTHead(
            self.spec.embed_dim,
            self.spec.dpt_features,
            self.spec.dpt_channels,
            use_bn=use_bn,
            use_clstoken=use_clstoken,
            output_activation=output_activation,
        )

    @property
    def dense_channels(self) -> int:
        """Channels of `dense_features`."""
        return self.spec.dpt_features // 2

    def intermediate_features(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Normalised tokens of the four tapped blocks.

        Args:
            x: (B, 3, H, W) ImageNet-normalised RGB, H and W multiples of 14.

        Returns:
            Four (patch_tokens (B, H/14*W/14, C), class_token (B, C)) pairs, shallow to deep.
        """
        return self.pretrained.intermediate_layers(x, self.spec.taps)

    def dense_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised RGB -> (B, features/2, H, W) decoder features."""
        grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        return self.depth_head.dense_features(self.intermediate_features(x), grid)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised RGB -> (B, H, W) non-negative map: relative inverse depth ("relu")
        or metric depth in [0, max_depth] ("sigmoid")."""
        grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        out = self.depth_head(self.intermediate_features(x), grid)
        if self.output_activation == "sigmoid":
            out = out * self.max_depth
        return out.squeeze(1)
