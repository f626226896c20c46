"""Prompts drawn from target masks for SAM2 training and held-out scoring, as the official training does.

The draws themselves are the `sam2` package's own helpers (`sam2.modeling.sam2_utils`: `sample_box_points`,
`get_next_point`, `sample_one_point_from_error_center`; `sam2.utils.misc.concat_points`); what this module
adds is the plan of one step and the seeding:

- a step starts from one prompt per object: with probability `box_prob` the object's box, its corners moved
  by up to 10 % of the box side (at most 20 px at a 1024 px input, scaled to the model's input), else one
  positive click drawn uniformly inside the mask (the official training's image case: P(box) = 0.5);
- then `corrections` corrective clicks, each drawn uniformly from the errors of the previous prediction
  (positive in a missed pixel, negative in a false one) and added to the prompt, the previous low-resolution
  logits fed back as the mask prompt; with probability `gt_click_prob` a click is drawn from the target mask
  instead (official: 7 clicks, 0.1);
- held-out scoring uses no randomness: one click at the pixel farthest from the mask's outline, or the
  mask's exact box.

The official helpers draw with torch's global generator; `seeded` runs them under a forked generator seeded
per step, so a resumed run draws exactly what an uninterrupted one would and nothing else's draws move.
Coordinates are (x, y) pixels of the model input (the masks' grid), as `SAM2Base._forward_sam_heads` takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

OFFICIAL_INPUT_PX = 1024  # the input size the official box-noise bound is given for
OFFICIAL_NOISE_BOUND_PX = 20
BOX_NOISE = 0.1  # corner noise as a share of the box side (official)

PointInputs = dict[str, Tensor]  # {"point_coords": (N, P, 2) float32 px, "point_labels": (N, P) int32}


@dataclass(frozen=True)
class PromptPlan:
    """What one training step prompts with: a box or a click first, then where each correction comes from."""

    use_box: bool
    from_gt: tuple[bool, ...]  # per corrective click: drawn from the target mask (True) or its errors

    @classmethod
    def draw(
        cls, rng: np.random.Generator, *, box_prob: float, corrections: int, gt_click_prob: float
    ) -> PromptPlan:
        use_box = bool(rng.random() < box_prob)
        return cls(use_box, tuple(bool(rng.random() < gt_click_prob) for _ in range(corrections)))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generators forked and seeded: the official helpers' draws depend on `seed` only."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_masks(gt: Tensor) -> None:
    from labeler.segment.sam2_model import import_sam2

    import_sam2()  # before any `sam2.*` import: it keeps hydra's global state out of the program
    if gt.dtype != torch.bool or gt.dim() != 4 or gt.shape[1] != 1:
        raise ValueError(f"target masks must be (N, 1, H, W) bool, got {tuple(gt.shape)} {gt.dtype}")


def noise_bound_px(input_px: int) -> int:
    """The official 20 px corner-noise bound, at this model's input size."""
    return max(1, round(OFFICIAL_NOISE_BOUND_PX * input_px / OFFICIAL_INPUT_PX))


def first_prompt(gt: Tensor, *, use_box: bool) -> PointInputs:
    """A noisy box (two corner points, labels 2 and 3) or one positive click inside each mask.

    Args:
        gt: (N, 1, H, W) bool target masks, each non-empty, at the model input size.
        use_box: box prompts instead of clicks.
    """
    _check_masks(gt)
    from sam2.modeling.sam2_utils import get_next_point, sample_box_points

    if use_box:
        points, labels = sample_box_points(gt, noise=BOX_NOISE, noise_bound=noise_bound_px(gt.shape[-1]))
    else:
        points, labels = get_next_point(gt_masks=gt, pred_masks=None, method="uniform")
    return {"point_coords": points, "point_labels": labels}


def corrective_click(gt: Tensor, pred_logits: Tensor | None) -> tuple[Tensor, Tensor]:
    """One click per object from the errors of `pred_logits` (> 0 is in the mask): positive (label 1) in a
    missed pixel, negative (0) in a false one; a perfect prediction gets a negative click on the background.
    `pred_logits` None draws a positive click inside the target instead.

    Returns:
        ((N, 1, 2) float32 (x, y) px, (N, 1) int32 labels).
    """
    _check_masks(gt)
    from sam2.modeling.sam2_utils import get_next_point

    pred = None if pred_logits is None else pred_logits.detach() > 0
    return get_next_point(gt_masks=gt, pred_masks=pred, method="uniform")


def add_clicks(prompt: PointInputs, points: Tensor, labels: Tensor) -> PointInputs:
    """The prompt with the new clicks appended (the official `concat_points`)."""
    from labeler.segment.sam2_model import import_sam2

    import_sam2()
    from sam2.utils.misc import concat_points

    return concat_points(prompt, points, labels)


def centre_click(gt: Tensor) -> PointInputs:
    """One positive click per mask at its pixel farthest from the outline (the official eval click)."""
    _check_masks(gt)
    from sam2.modeling.sam2_utils import sample_one_point_from_error_center

    points, labels = sample_one_point_from_error_center(gt, None)
    return {"point_coords": points, "point_labels": labels}


def exact_box(gt: Tensor) -> PointInputs:
    """Each mask's tight box (inclusive pixel corners) as the two corner points SAM2 takes."""
    _check_masks(gt)
    from sam2.modeling.sam2_utils import sample_box_points

    points, labels = sample_box_points(gt, noise=0.0)
    return {"point_coords": points, "point_labels": labels}
