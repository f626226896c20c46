"""The official SAM2 model (`SAM2Base`) wrapped so that one `forward` is one training step of SAM2's
interactive training on images, and `predict` its held-out prompts.

The image path is that of the official image predictor: `SAM2Base.forward_image` (the Hiera encoder, the
FPN neck and the mask decoder's two 1x1 projections of the high-resolution levels), the lowest-resolution
level plus `no_mem_embed` as the image embedding (configs with `directly_add_no_mem_embed`, as every
release has), the two higher levels as the decoder's high-resolution features. Prompts go through
`SAM2Base._forward_sam_heads` (the official prompt encoder and mask decoder), multimask output decided by
`SAM2Base._use_multimask` (three candidates for a single click, one otherwise), each corrective step fed
the previous step's best low-resolution logits as the mask prompt, as `_iter_correct_pt_sampling` does.

With the encoder frozen its output is the same every epoch, so it is kept per image (dataset row) in host
memory, in the dtype it was computed in: for a 1024 px model about 8.4 MB per image in bf16 (CUDA) or
16.8 MB in float32 (CPU). The decoder's two projections are part of that output; they train only with the
encoder (`train_encoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from labeler.train.sam2.losses import StepOutput
from labeler.train.sam2.prompts import (
    PromptPlan,
    add_clicks,
    centre_click,
    corrective_click,
    exact_box,
    first_prompt,
    seeded,
)

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

PIXEL_MEAN = (0.485, 0.456, 0.406)  # SAM2Transforms' normalisation (ImageNet)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PromptSettings:
    box_prob: float = 0.5
    corrections: int = 7
    gt_click_prob: float = 0.1


@dataclass
class StepOutputs:
    """One training step: every prompt step's outputs, the targets, and a zero tied to the trained weights
    (the loss of a batch whose objects all vanished at the input size)."""

    steps: list[StepOutput]
    target: Tensor  # (N, 1, S, S) float {0, 1}
    zero: Tensor


def set_trainable(
    sam: SAM2Base, *, train_encoder: bool, corrections: int, object_score_weight: float
) -> None:
    """Gradients on for the prompt encoder and mask decoder (and the encoder with `train_encoder`), off for
    what no loss reaches in this setting (DDP needs a gradient for every trainable parameter)."""
    sam.requires_grad_(False)
    sam.sam_prompt_encoder.requires_grad_(True)
    sam.sam_mask_decoder.requires_grad_(True)
    if train_encoder:
        sam.image_encoder.requires_grad_(True)
        sam.no_mem_embed.requires_grad_(True)
    else:  # applied inside forward_image, so part of the cached encoder output
        for name in ("conv_s0", "conv_s1"):
            if hasattr(sam.sam_mask_decoder, name):
                getattr(sam.sam_mask_decoder, name).requires_grad_(False)
    if corrections == 0:  # no mask prompt is ever fed back
        sam.sam_prompt_encoder.mask_downscaling.requires_grad_(False)
    head = getattr(sam.sam_mask_decoder, "pred_obj_score_head", None)
    if object_score_weight == 0 and head is not None:
        head.requires_grad_(False)
        sam.sam_mask_decoder.obj_score_token.requires_grad_(False)


class PromptedSam2(nn.Module):
    """SAM2 whose `forward` is a training step (features, first prompt, corrective clicks); see the module.

    Args:
        sam: the loaded official model.
        prompts: how a training step prompts.
        train_encoder: the image encoder trains (no cache, features with gradients).
        cache: keep the frozen encoder's output per image.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, sam: SAM2Base, prompts: PromptSettings, *, train_encoder: bool, cache: bool) -> None:
        super().__init__()
        self.sam = sam
        self.prompts = prompts
        self.train_encoder = train_encoder
        self.cache_enabled = cache and not train_encoder
        self._cache: dict[int, list[Tensor]] = {}  # dataset row -> encoder levels (C, h, w), host memory
        self.generators: dict[tuple[Any, ...], Any] = {}  # held-out automatic generators over `sam`
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def _encode(self, image: Tensor) -> list[Tensor]:
        x = (image.float() - self.mean) / self.std
        out = self.sam.forward_image(x)
        return list(out["backbone_fpn"][-self.sam.num_feature_levels :])

    def features(self, image: Tensor, rows: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(image embedding (B, C, h, w), [high-res levels]) of uint8 (B, 3, S, S) images."""
        if self.train_encoder:
            levels = self._encode(image)
        else:
            keys = [int(r) for r in rows]
            missing = [j for j, k in enumerate(keys) if k not in self._cache]
            computed: dict[int, list[Tensor]] = {}
            if missing:
                with torch.no_grad():
                    fresh = self._encode(image[missing])
                for n, j in enumerate(missing):
                    computed[keys[j]] = [lvl[n].detach() for lvl in fresh]
                    if self.cache_enabled:
                        self._cache[keys[j]] = [t.to("cpu", copy=True) for t in computed[keys[j]]]
            per_image = [computed[k] if k in computed else self._cache[k] for k in keys]
            levels = [
                torch.stack([p[lvl] for p in per_image]).to(image.device, non_blocking=True)
                for lvl in range(len(per_image[0]))
            ]
        embed = levels[-1] + self.sam.no_mem_embed.view(1, -1, 1, 1)
        return embed, levels[:-1]

    def _heads(
        self, embed: Tensor, high: list[Tensor], prompt: dict[str, Tensor], mask_input: Tensor | None
    ) -> tuple[Any, ...]:
        return self.sam._forward_sam_heads(
            backbone_features=embed,
            point_inputs=prompt,
            mask_inputs=mask_input,
            high_res_features=high,
            multimask_output=self.sam._use_multimask(True, prompt),
        )

    @staticmethod
    def _objects(masks: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        img, obj = valid.nonzero(as_tuple=True)
        return img, masks[img, obj][:, None]

    def forward(self, image: Tensor, masks: Tensor, valid: Tensor, row: Tensor, seed: Tensor) -> StepOutputs:
        """One training step's outputs for B images with up to K objects each.

        Args:
            image: (B, 3, S, S) uint8.  masks: (B, K, S, S) bool.  valid: (B, K) bool.
            row: (B,) dataset rows (cache keys).  seed: (B,) prompt seeds (the first one seeds the step).
        """
        p = self.prompts
        trained = [q for q in self.parameters() if q.requires_grad]
        zero = sum((q.reshape(-1)[:1].sum() for q in trained), image.new_zeros((), dtype=torch.float32)) * 0
        img, gt = self._objects(masks, valid)
        if img.numel() == 0:
            return StepOutputs([], gt.float(), zero)
        embed, high = self.features(image, row)
        embed, high = embed[img], [h[img] for h in high]
        step_seed = int(seed[0])
        plan = PromptPlan.draw(
            np.random.default_rng(step_seed),
            box_prob=p.box_prob,
            corrections=p.corrections,
            gt_click_prob=p.gt_click_prob,
        )
        steps: list[StepOutput] = []
        with seeded(step_seed, image.device):
            prompt = first_prompt(gt, use_box=plan.use_box)
            mask_input: Tensor | None = None
            best_high: Tensor | None = None
            for k in range(1 + len(plan.from_gt)):
                if k > 0:
                    points, labels = corrective_click(gt, None if plan.from_gt[k - 1] else best_high)
                    prompt = add_clicks(prompt, points, labels)
                low_multi, high_multi, ious, low_best, best_high, _, obj = self._heads(
                    embed, high, prompt, mask_input
                )
                steps.append(StepOutput(high_multi, ious, obj))
                mask_input = low_best
        return StepOutputs(steps, gt.float(), zero)

    @torch.no_grad()
    def predict(
        self, image: Tensor, masks: Tensor, valid: Tensor, row: Tensor, *, prompt: Literal["point", "box"]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Held-out masks from one centre click or the exact box per object (no randomness).

        Returns:
            (predicted (N, S, S) bool, target (N, S, S) bool, image index (N,)) of the valid objects.
        """
        img, gt = self._objects(masks, valid)
        if img.numel() == 0:
            return gt[:, 0], gt[:, 0], img
        embed, high = self.features(image, row)
        points = centre_click(gt) if prompt == "point" else exact_box(gt)
        out = self._heads(embed[img], [h[img] for h in high], points, None)
        return out[4][:, 0] > 0, gt[:, 0], img
