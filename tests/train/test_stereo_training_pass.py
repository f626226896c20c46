"""The train-stereo training pass, fast: the real engine and task (no patch), a few full-image steps on two
tiny box pairs from labeler's deterministic ViT-S release, lowering the training loss it optimises and
changing the weights it writes."""

from __future__ import annotations

import json

import torch

from tests.train.conftest import tiny_stereo_config


def test_training_steps_lower_the_loss_on_tiny_pairs(stereo_dataset, vits_release, tmp_path):
    from labeler.train.stereo.api import train_stereo

    ds, _ = stereo_dataset
    cfg = tiny_stereo_config(
        ds,
        tmp_path / "run",
        vits_release,
        epochs=EPOCHS,
        crop=(96, 128),  # the whole image, no augmentation: every epoch sees the same batch
        augment=False,
        lr=LR,
        photometric_weight=0.0,
        smooth_weight=0.0,  # the distillation loss alone: confidence-weighted L1 to the pseudo-labels
    )
    res = train_stereo(cfg)
    assert (res.n_train, res.n_heldout) == (2, 1)
    losses = [m.train_loss for m in res.history]
    assert len(losses) == EPOCHS and all(torch.isfinite(torch.tensor(losses)))
    # one step of the 2 training pairs per epoch: epoch 1's loss is the parent's, the last one after
    # EPOCHS - 1 updates (cosine schedule, no warm-up)
    assert losses[-1] < DROP * losses[0], losses
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["train_loss"] for m in metrics] == losses
    parent = torch.load(vits_release, map_location="cpu", weights_only=True)["model"]
    best = tmp_path / "run" / "model_best_bp2.pth"
    tuned = torch.load(best, map_location="cpu", weights_only=True)["model"]
    key = "update_block.disp_head.conv.0.bias"
    assert not torch.equal(parent[key], tuned[key])
    frozen = [k for k in parent if k.startswith("feature.dino.")]  # the DAv2 branch: never trained
    assert frozen and all(torch.equal(parent[k], tuned[k]) for k in frozen)


EPOCHS = 3  # measured: 15.2, 12.3, 9.37 (x0.62)
LR = 2e-4
DROP = 0.8
