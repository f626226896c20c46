"""Held-out figures of a SAM2 being trained, against the held-out images' masks (at the model input size):

- `point_miou`: mean IoU of the mask one click at each mask's centre gives (the candidate of highest
  predicted IoU of the three, as a user's single click gets);
- `box_miou`: the same from each mask's exact box;
- `amg_recall`: the official `SAM2AutomaticMaskGenerator` run on the model being trained (grid
  `points_per_side`², the official quality thresholds unless set): the share of held-out masks matched one
  to one (greedily, highest IoU first) by an automatic mask with IoU >= 0.5; with `amg_masks_per_image`,
  how many masks it kept per image (recall alone rewards a generator that keeps everything).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data_schema.sam2_train import Sam2HeldoutFigures
from labeler.train.engine import autocast
from labeler.train.sam2.net import PromptedSam2

MATCH_IOU = 0.5


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N,) IoU of paired bool masks (N, H, W); 0 where both are empty."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def matched(gt: Tensor, found: Tensor, *, threshold: float = MATCH_IOU) -> int:
    """How many of the (G, H, W) target masks get their own (A, H, W) found mask with IoU >= threshold
    (pairs taken greedily by IoU, each mask used once)."""
    if gt.shape[0] == 0 or found.shape[0] == 0:
        return 0
    g, f = gt.flatten(1).float(), found.flatten(1).float()
    inter = g @ f.T
    union = g.sum(1, keepdim=True) + f.sum(1)[None] - inter
    iou = (inter / union.clamp(min=1)).numpy()
    n, used_g, used_f = 0, set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < threshold:
            break
        if i in used_g or j in used_f:
            continue
        used_g.add(i)
        used_f.add(j)
        n += 1
    return n


def automatic_generator(sam: Any, *, points_per_side: int, pred_iou_thresh: float, stability_thresh: float):
    """The official generator over `sam` (binary masks); backbone sizes set from the model's input size
    (the official predictor assumes 1024 px)."""
    from labeler.segment.sam2_model import import_sam2

    import_sam2()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    with warnings.catch_warnings():  # its transforms use the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        gen = SAM2AutomaticMaskGenerator(
            sam,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_thresh,
            output_mode="binary_mask",
        )
    s = sam.image_size
    gen.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return gen


@contextmanager
def _quiet_predictor() -> Iterator[None]:
    """No INFO lines: the official image predictor logs two per image on the root logger."""
    before = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(before)


@dataclass
class _Tally:
    point: list[float] = field(default_factory=list)
    box: list[float] = field(default_factory=list)
    matched: int = 0
    targets: int = 0
    masks: int = 0
    images: int = 0


def _ids_map(masks: Tensor | np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (H, W) int32 with mask k as id k + 1 (later masks on top)."""
    m = masks.numpy() if isinstance(masks, Tensor) else masks
    ids = np.zeros(m.shape[1:], np.int32)
    for k in range(m.shape[0]):
        ids[m[k]] = k + 1
    return ids


def preview_row(
    image: np.ndarray, name: str, gt: Tensor, point: Tensor, amg: np.ndarray | None
) -> np.ndarray:
    """image | targets | one centre click per target | automatic masks (each mask its own tint)."""
    from labeler.previews import mask_overlay
    from labeler.train.report import caption

    w = image.shape[1]
    tiles = [image, mask_overlay(image, _ids_map(gt), []), mask_overlay(image, _ids_map(point), [])]
    names = [name, f"targets ({gt.shape[0]})", "one centre click each"]
    if amg is not None:
        tiles.append(mask_overlay(image, _ids_map(amg), []))
        names.append(f"automatic masks ({amg.shape[0]})")
    return np.vstack([np.hstack([caption(w, n) for n in names]), np.hstack(tiles)])


@torch.no_grad()
def evaluate_sam2(
    model: PromptedSam2,
    loader: Any,
    device: torch.device,
    *,
    amp: bool,
    epoch: int,
    amg: dict[str, Any] | None,
    previews: int,
) -> tuple[Sam2HeldoutFigures, list[np.ndarray]]:
    """Held-out figures (module docstring) and preview rows of the first `previews` images.

    Args:
        amg: `automatic_generator` settings; None: no recall figure.
    """
    model.eval()
    tally, rows = _Tally(), list[np.ndarray]()
    gen = None
    if amg:  # built once per model: the official predictor scripts its transforms (seconds)
        key = tuple(sorted(amg.items()))
        if key not in model.generators:
            model.generators[key] = automatic_generator(model.sam, **amg)
        gen = model.generators[key]
    reader = loader.dataset
    for batch in loader:
        b = {k: v.to(device) for k, v in batch.items()}
        args = (b["image"], b["masks"], b["valid"], b["row"])
        with autocast(device, amp):
            point, gt, img = model.predict(*args, prompt="point")
            box, _, _ = model.predict(*args, prompt="box")
        tally.point += mask_iou(point, gt).tolist()
        tally.box += mask_iou(box, gt).tolist()
        point, gt, img = point.cpu(), gt.cpu(), img.cpu()
        for j in range(b["image"].shape[0]):
            image = np.ascontiguousarray(batch["image"][j].permute(1, 2, 0).numpy())
            targets = gt[img == j]
            found = None
            if gen is not None:
                with autocast(device, amp), _quiet_predictor():
                    out = gen.generate(image)
                found = (
                    np.stack([m["segmentation"] for m in out])
                    if out
                    else np.zeros((0, *image.shape[:2]), bool)
                )
                tally.matched += matched(targets, torch.from_numpy(found))
                tally.targets += int(targets.shape[0])
                tally.masks += int(found.shape[0])
                tally.images += 1
            if len(rows) < previews:
                name = f"{reader.sample_ids[reader.rows.index(int(batch['row'][j]))]} (epoch {epoch})"
                rows.append(preview_row(image, name, targets, point[img == j], found))
    figures = Sam2HeldoutFigures(
        point_miou=float(np.mean(tally.point)) if tally.point else None,
        box_miou=float(np.mean(tally.box)) if tally.box else None,
        amg_recall=tally.matched / tally.targets if tally.targets else None,
        amg_masks_per_image=tally.masks / tally.images if tally.images else None,
        n_objects=len(tally.point),
    )
    return figures, rows
