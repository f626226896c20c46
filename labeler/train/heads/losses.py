"""Losses of the heads. Every depth loss takes a per-pixel weight; weight 0 marks an invalid pixel.

Shapes: predictions and targets (B, H, W) float; weights (B, H, W) float >= 0 (the stereo confidence,
0 where the pseudo-label depth is NaN or outside (0, max_depth]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS_DEPTH_M = 1e-3  # predictions are clamped to this before the log (the sigmoid can reach 0)


def _weighted_mean(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum() / w.sum().clamp_min(1e-6)


def silog_loss(pred_m: Tensor, target_m: Tensor, weight: Tensor, *, variance_focus: float = 0.5) -> Tensor:
    """Scale-invariant log loss (Eigen et al.; DAv2 metric uses variance_focus 0.5), confidence-weighted.

    sqrt(E_w[g^2] - λ E_w[g]^2) with g = log(pred) - log(target) over pixels of weight > 0.
    """
    valid = weight > 0
    g = torch.zeros_like(pred_m)
    g[valid] = torch.log(pred_m[valid].clamp_min(_EPS_DEPTH_M)) - torch.log(target_m[valid])
    mean = _weighted_mean(g, weight)
    mean_sq = _weighted_mean(g * g, weight)
    return torch.sqrt((mean_sq - variance_focus * mean * mean).clamp_min(1e-8))


def l1_loss(pred_m: Tensor, target_m: Tensor, weight: Tensor) -> Tensor:
    """Confidence-weighted mean absolute error in metres."""
    valid = weight > 0
    err = torch.zeros_like(pred_m)
    err[valid] = (pred_m[valid] - target_m[valid]).abs()
    return _weighted_mean(err, weight)


def focal_loss(logits: Tensor, target: Tensor, *, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Sigmoid focal loss (Lin et al.), mean over pixels; target in {0, 1}."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * ce * (1 - p_t) ** gamma).mean()


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """1 - soft Dice per image, averaged over the batch; an image with an empty target and an empty
    prediction scores 0."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def _pointwise(kind: str, logits: Tensor, target: Tensor) -> Tensor:
    if kind == "focal":
        return focal_loss(logits, target)
    pos = target.mean().clamp(1e-3, 0.5)  # sparse maps (boundaries): weigh positives up to 50/50
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=(1 - pos) / pos)


def seg_loss(objectness: Tensor, boundary: Tensor, fg: Tensor, edges: Tensor, *, kind: str = "bce") -> Tensor:
    """Objectness and boundary maps: (BCE or focal) + Dice on each.

    Args:
        objectness, boundary: (B, H, W) logits.
        fg: (B, H, W) {0, 1}, pixels of any pseudo-mask object.
        edges: (B, H, W) {0, 1}, object pixels at an instance boundary or a depth step.
        kind: "bce" (class-balanced) or "focal".
    """
    return (
        _pointwise(kind, objectness, fg)
        + dice_loss(objectness, fg)
        + _pointwise(kind, boundary, edges)
        + dice_loss(boundary, edges)
    )


@dataclass(frozen=True)
class LossWeights:
    depth_kind: str = "silog"
    seg_kind: str = "bce"
    depth: float = 0.5
    seg: float = 0.5


def joint_loss(out: dict[str, Tensor], batch: dict[str, Tensor], weights: LossWeights) -> dict[str, Tensor]:
    """The task's loss from the model outputs present: w_d * depth + w_s * seg (a missing head adds 0).

    Returns:
        {"loss": total, "depth": depth term (unweighted), "seg": seg term (unweighted)} — present terms only.
    """
    terms: dict[str, Tensor] = {}
    total = torch.zeros((), device=next(iter(out.values())).device)
    if "depth" in out:
        fn = silog_loss if weights.depth_kind == "silog" else l1_loss
        terms["depth"] = fn(out["depth"].float(), batch["depth"], batch["weight"])
        total = total + (weights.depth if "objectness" in out else 1.0) * terms["depth"]
    if "objectness" in out:
        terms["seg"] = seg_loss(
            out["objectness"].float(),
            out["boundary"].float(),
            batch["fg"],
            batch["edges"],
            kind=weights.seg_kind,
        )
        if "class_logits" in out and "cls" in batch:  # a dataset with classes: the class map's cross-entropy
            terms["seg"] = terms["seg"] + F.cross_entropy(out["class_logits"].float(), batch["cls"])
        total = total + (weights.seg if "depth" in out else 1.0) * terms["seg"]
    return {"loss": total, **terms}
