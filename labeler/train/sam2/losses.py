"""The losses of SAM2's official training, on the masks of every prompt step.

Per step (the first prompt, then each corrective click) and per object, against the target mask at the
model input size:

- sigmoid focal loss (alpha 0.25, gamma 2), mean over pixels;
- dice loss, 1 - (2 |P∩T| + 1) / (|P| + |T| + 1) with P the sigmoid of the logits;
- L1 between the predicted IoU and the IoU the mask (logits > 0) actually has;
- the object score: binary cross-entropy of the object-score logit against "an object is there" (every
  target here is an object).

With several candidate masks (multimask output for an ambiguous single click) focal and dice count only for
the candidate with the lowest `focal_weight * focal + dice_weight * dice`; the IoU term covers every
candidate (the official `supervise_all_iou`). Each term is the mean over objects, summed over the steps,
then weighted (official: focal 20, dice 1, IoU 1, object score 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
TERMS = ("focal", "dice", "iou", "object_score")


@dataclass(frozen=True)
class LossWeights:
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


@dataclass(frozen=True)
class StepOutput:
    """SAM2's outputs for one prompt step of N objects."""

    logits: Tensor  # (N, M, H, W) mask logits at the model input size; M = 3 (multimask) or 1
    iou: Tensor  # (N, M) predicted IoU
    object_score: Tensor  # (N, 1) object-score logits


def focal_per_mask(logits: Tensor, target: Tensor) -> Tensor:
    """(N, M) sigmoid focal loss, mean over pixels; `target` (N, 1, H, W) in {0, 1}."""
    target = target.expand_as(logits)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = p * target + (1 - p) * (1 - target)
    weight = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (weight * ce * (1 - p_true) ** FOCAL_GAMMA).flatten(2).mean(-1)


def dice_per_mask(logits: Tensor, target: Tensor) -> Tensor:
    """(N, M) dice loss with +1 smoothing on both sides of the ratio."""
    p = logits.sigmoid().flatten(2)
    t = target.expand_as(logits).flatten(2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def actual_iou(logits: Tensor, target: Tensor) -> Tensor:
    """(N, M) IoU of each mask (logits > 0) with the target (0 where both are empty)."""
    pred = logits.flatten(2) > 0
    t = target.expand_as(logits).flatten(2) > 0
    inter = (pred & t).sum(-1).float()
    union = (pred | t).sum(-1).float()
    return inter / union.clamp(min=1.0)


def step_terms(out: StepOutput, target: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """One step's unweighted terms, each the mean over the N objects."""
    logits = out.logits.float()
    focal, dice = focal_per_mask(logits, target), dice_per_mask(logits, target)
    iou_l1 = (out.iou.float() - actual_iou(logits, target)).abs()
    if logits.shape[1] > 1:  # the best candidate carries the mask terms
        best = (weights.focal * focal + weights.dice * dice).argmin(dim=1, keepdim=True)
        focal, dice = focal.gather(1, best), dice.gather(1, best)
    objects = F.binary_cross_entropy_with_logits(
        out.object_score.float(), torch.ones_like(out.object_score, dtype=torch.float32), reduction="none"
    )
    return {
        "focal": focal.mean(),
        "dice": dice.mean(),
        "iou": iou_l1.mean(),
        "object_score": objects.mean(),
    }


def multistep_loss(steps: Sequence[StepOutput], target: Tensor, weights: LossWeights) -> dict[str, Tensor]:
    """{"loss": weighted total, term: unweighted sum over steps} for (N, 1, H, W) {0, 1} float targets."""
    if not steps:
        raise ValueError("no prompt steps to score")
    sums = dict.fromkeys(TERMS, torch.zeros((), device=target.device))
    for out in steps:
        for k, v in step_terms(out, target, weights).items():
            sums[k] = sums[k] + v
    total = torch.zeros((), device=target.device)
    for k in TERMS:
        total = total + getattr(weights, k) * sums[k]
    return {"loss": total, **sums}
