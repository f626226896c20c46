"""Held-out metrics: depth against the stereo (pseudo-label) depth, instances against the pseudo-masks.

Depth (over pixels with valid target depth): AbsRel = mean |pred - gt| / gt; δ1 = share with
max(pred/gt, gt/pred) < 1.25. Masks: foreground IoU; mIoU = mean over target instances of the best IoU
of any predicted instance; AP50 = COCO-style average precision (101-point interpolated) with a match at
IoU >= 0.5, predictions ranked by score, one match per target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_schema.heads import HeldoutFigures

DELTA1_RATIO = 1.25
MIN_PRED_DEPTH_M = 1e-6  # predictions are floored here so that ratios stay finite


def depth_pairs(pred_m: np.ndarray, target_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target), 1-D float64 metres, over the pixels of two (H, W) maps where the target is finite
    and positive and the prediction finite; predictions floored at MIN_PRED_DEPTH_M."""
    valid = np.isfinite(target_m) & (target_m > 0) & np.isfinite(pred_m)
    p = np.maximum(pred_m[valid].astype(np.float64), MIN_PRED_DEPTH_M)
    return p, target_m[valid].astype(np.float64)


def depth_sums(p: np.ndarray, g: np.ndarray) -> tuple[float, int]:
    """(sum of |p - g| / g, count with max(p/g, g/p) < 1.25) of `depth_pairs` output: AbsRel and δ1 are
    these over len(g)."""
    ratio = np.maximum(p / g, g / p)
    return float((np.abs(p - g) / g).sum()), int((ratio < DELTA1_RATIO).sum())


def depth_errors(pred_m: np.ndarray, target_m: np.ndarray) -> tuple[float, int, int]:
    """(sum of |pred-gt|/gt, count with ratio < 1.25, n valid) over finite positive targets, so that
    sums over many images give exact dataset means."""
    p, g = depth_pairs(pred_m, target_m)
    if not g.size:
        return 0.0, 0, 0
    abs_rel_sum, delta1_hits = depth_sums(p, g)
    return abs_rel_sum, delta1_hits, int(g.size)


def iou_matrix(pred_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """(K_pred, K_target) IoU of every predicted id 1..Kp with every target id 1..Kt."""
    kp, kt = int(pred_ids.max(initial=0)), int(target_ids.max(initial=0))
    joint = np.bincount(
        pred_ids.ravel().astype(np.int64) * (kt + 1) + target_ids.ravel(), minlength=(kp + 1) * (kt + 1)
    ).reshape(kp + 1, kt + 1)
    area_p, area_t = joint.sum(1), joint.sum(0)
    inter = joint[1:, 1:]
    union = area_p[1:, None] + area_t[None, 1:] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_at(iou: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy matching by decreasing score: (K_pred,) bool, True where the prediction is a true positive."""
    tp = np.zeros(iou.shape[0], bool)
    taken = np.zeros(iou.shape[1], bool)
    for i in np.argsort(-scores, kind="stable"):
        if iou.shape[1] == 0:
            break
        cand = np.where(taken, -1.0, iou[i])
        j = int(cand.argmax())
        if cand[j] >= threshold:
            tp[i], taken[j] = True, True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_targets: int) -> float:
    """COCO 101-point interpolated AP of ranked detections; NaN when there are no targets."""
    if n_targets == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = tp[order]
    tps, fps = np.cumsum(hits), np.cumsum(~hits)
    recall = tps / n_targets
    precision = tps / np.maximum(tps + fps, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        above = np.nonzero(recall >= r)[0]
        ap += precision[above[0]] if above.size else 0.0
    return float(ap / 101)


@dataclass
class HeldoutMetrics:
    """Accumulates per-image results; `summary()` gives the dataset figures."""

    abs_rel_sum: float = 0.0
    delta1_hits: int = 0
    depth_px: int = 0
    has_masks: bool = False
    fg_inter: int = 0
    fg_union: int = 0
    n_targets: int = 0
    best_ious: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tps: list[bool] = field(default_factory=list)

    def add_depth(self, pred_m: np.ndarray, target_m: np.ndarray) -> None:
        a, d, n = depth_errors(pred_m, target_m)
        self.abs_rel_sum += a
        self.delta1_hits += d
        self.depth_px += n

    def add_instances(self, pred_ids: np.ndarray, scores: np.ndarray, target_ids: np.ndarray) -> None:
        """pred_ids (H, W) ids 1..K with scores (K,); target_ids (H, W) pseudo-mask ids (0 = none)."""
        self.has_masks = True
        pf, tf = pred_ids > 0, target_ids > 0
        self.fg_inter += int((pf & tf).sum())
        self.fg_union += int((pf | tf).sum())
        iou = iou_matrix(pred_ids, target_ids)
        present = np.bincount(target_ids.ravel(), minlength=iou.shape[1] + 1)[1:] > 0
        iou = iou[:, present]
        s = np.asarray(scores, float)[: iou.shape[0]]
        self.n_targets += iou.shape[1]
        self.best_ious += list(iou.max(0)) if iou.shape[0] else [0.0] * iou.shape[1]
        self.scores += list(s)
        self.tps += list(match_at(iou, s, 0.5))

    def summary(self, *, heldout_loss: float | None = None) -> HeldoutFigures:
        """The dataset figures: depth ones when depth was added, mask ones when instances were."""
        depth = (
            {"abs_rel": self.abs_rel_sum / self.depth_px, "delta1": self.delta1_hits / self.depth_px}
            if self.depth_px
            else {}
        )
        masks = (
            {
                "fg_iou": self.fg_inter / self.fg_union if self.fg_union else float("nan"),
                "mask_miou": float(np.mean(self.best_ious)) if self.best_ious else float("nan"),
                "mask_ap50": average_precision(
                    np.asarray(self.scores, float), np.asarray(self.tps, bool), self.n_targets
                ),
            }
            if self.has_masks
            else {}
        )
        return HeldoutFigures(heldout_loss=heldout_loss, **depth, **masks)
