"""train-sam2's prompt sampling, losses and held-out matching on hand-made masks (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labeler.train.sam2.losses import (
    LossWeights,
    StepOutput,
    actual_iou,
    dice_per_mask,
    focal_per_mask,
    multistep_loss,
)
from labeler.train.sam2.prompts import (
    PromptPlan,
    add_clicks,
    centre_click,
    corrective_click,
    exact_box,
    first_prompt,
    noise_bound_px,
    seeded,
)

S = 64


def _rect(n: int = 1, y0: int = 10, y1: int = 30, x0: int = 20, x1: int = 50) -> torch.Tensor:
    m = torch.zeros((n, 1, S, S), dtype=torch.bool)
    m[:, :, y0:y1, x0:x1] = True
    return m


def _at(mask: torch.Tensor, xy: torch.Tensor) -> bool:
    x, y = int(xy[0]), int(xy[1])
    return bool(mask[0, y, x])


def test_corrective_click_lies_in_the_error_region_with_the_right_label():
    """A missed pixel gets a positive click there, a false pixel a negative one, over many draws."""
    gt = _rect()
    pred_logits = torch.full((1, 1, S, S), -5.0)
    pred_logits[:, :, 10:30, 20:35] = 5.0  # right part of the target missed
    pred_logits[:, :, 40:50, 5:15] = 5.0  # a false blob
    missed = gt & ~(pred_logits > 0)
    false = ~gt & (pred_logits > 0)
    labels_seen = set()
    with seeded(3, torch.device("cpu")):
        for _ in range(200):
            points, labels = corrective_click(gt, pred_logits)
            assert points.shape == (1, 1, 2) and labels.shape == (1, 1)
            label = int(labels[0, 0])
            region = missed if label == 1 else false
            assert _at(region[0], points[0, 0]), (label, points[0, 0])
            labels_seen.add(label)
    assert labels_seen == {0, 1}  # both kinds of error drawn


def test_a_perfect_prediction_gets_a_negative_background_click_and_none_a_positive_one():
    gt = _rect(3)
    for _ in range(20):
        points, labels = corrective_click(gt, gt.float() * 10 - 5)
        assert (labels == 0).all()
        assert all(not _at(gt[k], points[k, 0]) for k in range(3))
        points, labels = corrective_click(gt, None)
        assert (labels == 1).all() and all(_at(gt[k], points[k, 0]) for k in range(3))


def test_boxes_contain_the_mask_exactly_and_noisy_ones_within_the_noise_bound():
    gt = _rect(y0=10, y1=30, x0=20, x1=50)
    box = exact_box(gt)
    assert box["point_labels"].tolist() == [[2, 3]]
    assert box["point_coords"][0].tolist() == [[20.0, 10.0], [49.0, 29.0]]  # inclusive corners
    ys, xs = torch.nonzero(gt[0, 0], as_tuple=True)
    (x0, y0), (x1, y1) = box["point_coords"][0].tolist()
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    bound = min(0.1 * 29, noise_bound_px(S))  # 10 % of the side, at most the scaled 20 px
    with seeded(0, torch.device("cpu")):
        for _ in range(50):
            noisy = first_prompt(gt, use_box=True)["point_coords"][0]
            assert (noisy - box["point_coords"][0]).abs().max() <= bound + 1e-5
    assert noise_bound_px(1024) == 20 and noise_bound_px(256) == 5


def test_first_click_inside_the_mask_and_centre_click_farthest_from_the_outline():
    gt = _rect(2, y0=10, y1=31, x0=20, x1=41)  # 21 x 21: centre pixel (30, 20)
    with seeded(1, torch.device("cpu")):
        p = first_prompt(gt, use_box=False)
    assert (p["point_labels"] == 1).all() and all(_at(gt[k], p["point_coords"][k, 0]) for k in range(2))
    c = centre_click(gt)
    assert c["point_coords"][0, 0].tolist() == [30.0, 20.0] and (c["point_labels"] == 1).all()
    both = add_clicks(c, torch.zeros(2, 1, 2), torch.zeros(2, 1, dtype=torch.int32))
    assert both["point_coords"].shape == (2, 2, 2) and both["point_labels"][:, 1].tolist() == [0, 0]


def test_seeded_draws_repeat_and_leave_the_global_generator_alone():
    gt = _rect(4)
    pred = torch.randn(4, 1, S, S)
    before = torch.random.get_rng_state()
    with seeded(7, torch.device("cpu")):
        a = corrective_click(gt, pred)
    with seeded(7, torch.device("cpu")):
        b = corrective_click(gt, pred)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_prompt_plan_follows_its_probabilities():
    rng = np.random.default_rng(0)
    plans = [PromptPlan.draw(rng, box_prob=0.5, corrections=7, gt_click_prob=0.1) for _ in range(2000)]
    assert all(len(p.from_gt) == 7 for p in plans)
    assert 0.45 < np.mean([p.use_box for p in plans]) < 0.55
    assert 0.08 < np.mean([g for p in plans for g in p.from_gt]) < 0.12
    never = PromptPlan.draw(rng, box_prob=0.0, corrections=2, gt_click_prob=0.0)
    assert not never.use_box and never.from_gt == (False, False)


def test_loss_terms_on_known_masks():
    target = _rect().float()
    perfect = target * 40 - 20  # logits: +20 inside, -20 outside
    assert focal_per_mask(perfect, target).item() < 1e-8
    assert dice_per_mask(perfect, target).item() < 1e-6
    assert actual_iou(perfect, target).item() == 1.0
    half = target.clone()
    half[:, :, :, 35:] = 0  # predicts the left half of the 30-px-wide box
    assert actual_iou(half * 40 - 20, target).item() == pytest.approx(15 / 30)
    empty = torch.full_like(target, -20.0)
    assert dice_per_mask(empty, target).item() == pytest.approx(1 - 1 / (600 + 1), rel=1e-4)


def test_multimask_loss_counts_the_best_candidate_and_sums_the_steps():
    """Focal and dice come from the closest of 3 candidates; the IoU term covers all 3."""
    target = _rect().float()
    good, bad = target * 40 - 20, torch.full_like(target, -20.0)
    multi = torch.cat([bad, good, bad], dim=1)
    iou_pred = torch.tensor([[0.0, 1.0, 0.0]])  # right for every candidate
    obj = torch.full((1, 1), 30.0)
    w = LossWeights()
    one = multistep_loss([StepOutput(multi, iou_pred, obj)], target, w)
    assert one["focal"].item() < 1e-8 and one["dice"].item() < 1e-6 and one["iou"].item() < 1e-6
    single = multistep_loss([StepOutput(bad, torch.zeros(1, 1), obj)], target, w)
    assert single["dice"].item() > 0.99
    two = multistep_loss(
        [StepOutput(multi, iou_pred, obj), StepOutput(bad, torch.zeros(1, 1), obj)], target, w
    )
    assert two["dice"].item() == pytest.approx(one["dice"].item() + single["dice"].item())
    expected = sum(getattr(w, k) * two[k] for k in ("focal", "dice", "iou", "object_score"))
    assert two["loss"].item() == pytest.approx(float(expected))
    wrong_iou = multistep_loss([StepOutput(multi, torch.tensor([[1.0, 1.0, 1.0]]), obj)], target, w)
    assert wrong_iou["iou"].item() == pytest.approx(2 / 3)  # two candidates predicted 1, are 0


def test_matching_is_one_to_one_at_half_iou():
    from labeler.train.sam2.eval import mask_iou, matched

    a = _rect()[:, 0]
    b = _rect(y0=40, y1=60, x0=0, x1=20)[:, 0]
    gt = torch.cat([a, b])
    assert matched(gt, torch.cat([a, a, a])) == 1  # duplicates of one mask match it once
    assert matched(gt, torch.cat([b, a])) == 2
    shifted = _rect(y0=10, y1=30, x0=35, x1=64)[:, 0]  # overlaps a by 15/44 < 0.5
    assert matched(gt, shifted) == 0
    assert matched(gt, torch.zeros((0, S, S), dtype=torch.bool)) == 0
    assert mask_iou(a, shifted).item() == pytest.approx(15 / 44)
