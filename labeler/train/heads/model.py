"""DINOv2 + heads: the DAv2 depth head, an objectness/boundary head, and a fusion head over both.

`HeadsModel` is a `DinoDPT` (so its `pretrained.*` and `depth_head.*` keys are exactly those of a
Depth Anything V2 checkpoint) with, depending on the task, two more children:

- `seg_head`: a second DPT decoder in the same layout with two logit channels, objectness and boundary;
- `fusion`: a small conv net over [depth-decoder features, seg-decoder features, log predicted depth]
  that adds a residual to the seg logits, so boundaries can follow depth steps (`task="fusion"`).

Tasks: "depth" trains `depth_head`; "seg" trains `seg_head`; "fusion" trains all three with the joint
loss. The ViT is frozen unless `unfreeze_last_blocks` is called (finetune).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from data_schema.heads import HeadsModelConfig
from labeler.models.dinov2_dpt import PATCH_SIZE, VIT_SPECS, DinoDPT, DPTHead, ViTSpec

# The test / demo size: no released weights exist for it, so it is always randomly initialised.
TINY_SPEC = ViTSpec(64, 4, 4, "mlp", (0, 1, 2, 3), 32, (16, 32, 64, 64))
BACKBONE_SPECS: dict[str, ViTSpec] = {**VIT_SPECS, "tiny": TINY_SPEC}


def _unused_parameters(head: DPTHead) -> list[nn.Parameter]:
    """Parameters a DPT forward never touches: the deepest fusion block has no skip input."""
    block = head.scratch.refinenet4
    return list(block.resConfUnit1.parameters())


def _output_conv(head: DPTHead) -> nn.Module:
    """The head's last convolutions + activation: (B, F/2, H, W) features -> (B, out_channels, H, W)."""
    return head.scratch.output_conv2


class FusionHead(nn.Module):
    """[depth features, seg features, log depth] (B, 2F+1, H, W) -> residual seg logits (B, 2, H, W).

    The last convolution starts at zero, so at initialisation the fused logits are the seg head's.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2 * channels + 1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(channels, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]

    def forward(self, depth_feat: Tensor, seg_feat: Tensor, log_depth: Tensor) -> Tensor:
        return self.out(self.body(torch.cat([depth_feat, seg_feat, log_depth[:, None]], dim=1)))


class HeadsModel(DinoDPT):
    """DINOv2 ViT + DPT depth head (DAv2 layout, metric output) + optional seg and fusion heads.

    Args:
        config: backbone size, task, max depth (metres) and input size.

    `forward(x)` takes (B, 3, H, W) ImageNet-normalised RGB (H, W multiples of 14) and returns a dict:
        "depth": (B, H, W) metres in (0, max_depth_m)   (tasks depth, fusion)
        "objectness", "boundary": (B, H, W) logits        (tasks seg, fusion)
        "class_logits": (B, C + 1, H, W) logits, 0 = no object  (seg, fusion on a dataset with C classes)
    """

    def __init__(self, config: HeadsModelConfig) -> None:
        spec = BACKBONE_SPECS[config.backbone]
        super().__init__(
            "vits" if config.backbone == "tiny" else config.backbone,
            output_activation="sigmoid",
            max_depth=config.max_depth_m,
            spec=spec,
        )
        self.config = config
        self.seg_head: DPTHead | None = None
        self.fusion: FusionHead | None = None
        if config.task in ("seg", "fusion"):
            self.seg_head = DPTHead(
                spec.embed_dim,
                spec.dpt_features,
                spec.dpt_channels,
                out_channels=2,
                output_activation="identity",
            )
        if config.task == "fusion":
            self.fusion = FusionHead(spec.dpt_features // 2)
        # A dataset with classes: a class map (no object + each class) from the seg decoder's features.
        self.class_head: nn.Conv2d | None = None
        if config.classes is not None and self.seg_head is not None:
            self.class_head = nn.Conv2d(spec.dpt_features // 2, len(config.classes) + 1, 1)
        self.freeze_backbone()

    # ------------------------------------------------------------------ what trains

    @property
    def has_depth(self) -> bool:
        return self.config.task in ("depth", "fusion")

    @property
    def has_seg(self) -> bool:
        return self.config.task in ("seg", "fusion")

    def head_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.depth_head] if self.has_depth else []
        return mods + [m for m in (self.seg_head, self.fusion, self.class_head) if m is not None]

    def freeze_backbone(self) -> None:
        """ViT frozen; trained heads trainable except parameters no forward uses (DDP needs that)."""
        self.requires_grad_(False)
        for m in self.head_modules():
            m.requires_grad_(True)
        for head in (self.depth_head, self.seg_head):
            if head is not None:
                for p in _unused_parameters(head):
                    p.requires_grad_(False)

    def unfreeze_last_blocks(self, n: int) -> list[list[nn.Parameter]]:
        """Make the last `n` ViT blocks (and the final norm) trainable.

        Returns:
            Parameter lists from the deepest block (with the final norm) to the shallowest unfrozen one.
        """
        blocks = self.pretrained.blocks
        if not 1 <= n <= len(blocks):
            raise ValueError(f"--unfreeze-last {n}: the {self.config.backbone} ViT has {len(blocks)} blocks")
        groups = []
        for i in range(len(blocks) - 1, len(blocks) - 1 - n, -1):
            params = list(blocks[i].parameters())
            if i == len(blocks) - 1:
                params += list(self.pretrained.norm.parameters())
            for p in params:
                p.requires_grad_(True)
            groups.append(params)
        return groups

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.head_modules() for p in m.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        layers = self.intermediate_features(x)
        out: dict[str, Tensor] = {}
        depth_feat = None
        if self.has_depth:
            depth_feat = self.depth_head.dense_features(layers, grid)
            depth = _output_conv(self.depth_head)(depth_feat)[:, 0] * self.max_depth
            out["depth"] = depth
        if self.seg_head is not None:
            seg_feat = self.seg_head.dense_features(layers, grid)
            logits = _output_conv(self.seg_head)(seg_feat)
            if self.fusion is not None and depth_feat is not None:
                log_depth = torch.log(out["depth"].clamp_min(1e-3))
                logits = logits + self.fusion(depth_feat, seg_feat, log_depth)
            out["objectness"], out["boundary"] = logits[:, 0], logits[:, 1]
            if self.class_head is not None:
                out["class_logits"] = self.class_head(seg_feat)  # (B, C + 1, H, W), 0 = no object
        return out


def build_model(config: HeadsModelConfig, *, seed: int = 0) -> HeadsModel:
    """A model with deterministic random weights (seeded, independent of the global RNG state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HeadsModel(config)
