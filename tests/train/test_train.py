"""Training on a dataset written by the pipeline: the loss falls, resume equals an uninterrupted run, the run
folder has what it promises, finetune records its change against the frozen run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.train.conftest import TINY_EPOCHS, make_tiny_dataset, tiny_train_config

LOSS_DROP = 0.75  # last epoch mean loss <= this x the first step loss (measured 0.62 on 2 cores)


def _steps(run):
    with open(run / "steps.csv") as f:
        return [{k: float(v) if v else None for k, v in r.items()} for r in csv.DictReader(f)]


def test_loss_falls(tiny_run):
    steps = _steps(tiny_run)
    history = json.loads((tiny_run / "metrics.json").read_text())
    assert len(history) == TINY_EPOCHS and len(steps) == 2 * TINY_EPOCHS  # 6 train samples, batch 3
    first, last = steps[0]["loss"], history[-1]["train_loss"]
    assert last <= LOSS_DROP * first, f"loss {first:.3f} -> {last:.3f}"
    for key in ("heldout_loss", "abs_rel", "delta1", "fg_iou", "mask_miou", "mask_ap50"):
        assert np.isfinite(history[-1][key]), key  # held-out metrics every epoch (values: random tiny ViT)


def test_run_folder(tiny_run):
    from PIL import Image

    for name in (
        "config.json",
        "split.json",
        "metrics.csv",
        "metrics.json",
        "steps.csv",
        "curves.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        f"previews/epoch_{TINY_EPOCHS:03d}.png",
    ):
        assert (tiny_run / name).is_file(), name
    split = json.loads((tiny_run / "split.json").read_text())
    assert (
        len(split["train"]) == 6
        and len(split["heldout"]) == 2
        and not set(split["train"]) & set(split["heldout"])
    )
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["weights"].startswith("random-init") and config["config"]["model"]["backbone"] == "tiny"
    assert Image.open(tiny_run / "curves.png").size[0] > 600


def test_resume_equals_uninterrupted(tiny_run, tmp_path):
    """Stop after epoch 3 of 10, resume in a new call: every parameter and the optimiser state equal the
    uninterrupted run's."""
    from labeler.train import train_heads

    ds = make_tiny_dataset(tiny_run.parent)
    out = tmp_path / "interrupted"
    train_heads(tiny_train_config(ds, out, resume=True), stop_after_epoch=3)
    assert json.loads((out / "metrics.json").read_text())[-1]["epoch"] == 3
    train_heads(tiny_train_config(ds, out, resume=True))
    a = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == TINY_EPOCHS
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), (
        "parameters differ after resume"
    )
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_resume_refuses_other_settings(tiny_run):
    from labeler.errors import LabelerError
    from labeler.train import train_heads

    with pytest.raises(LabelerError, match=r"different settings \(lr\)"):
        train_heads(tiny_train_config(make_tiny_dataset(tiny_run.parent), tiny_run, resume=True, lr=1e-2))


def test_finetune_unfreezes_and_compares(tiny_run, tmp_path):
    from data_schema import FinetuneComparison
    from data_schema.commands import FinetuneConfig
    from labeler.train import finetune

    res = finetune(FinetuneConfig(run=tiny_run, unfreeze_last=2, lr=1e-4, epochs=2, out=tmp_path / "ft"))
    text = (tmp_path / "ft" / "comparison.json").read_text()
    comp = json.loads(text)
    assert set(comp) == {"schema_version", "base_run", "base_epoch", "finetune_epochs"} | {
        "frozen",
        "finetuned",
        "change",
    }
    assert set(comp["frozen"]) == set(comp["finetuned"]) >= {"abs_rel", "delta1", "mask_ap50", "heldout_loss"}
    assert res.comparison == FinetuneComparison.model_validate_json(text)
    assert res.comparison.finetuned == res.history[-1].heldout and comp["finetune_epochs"] == 2
    assert comp["change"]["abs_rel"] == pytest.approx(
        comp["finetuned"]["abs_rel"] - comp["frozen"]["abs_rel"]
    )
    base = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=False)["model"]
    tuned = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=False)["model"]
    changed = {
        k.split(".")[2]
        for k in base
        if k.startswith("pretrained.blocks.") and not torch.equal(base[k], tuned[k])
    }
    assert changed == {"2", "3"}  # the last two of the tiny ViT's four blocks, no other
    assert torch.equal(
        base["pretrained.patch_embed.proj.weight"], tuned["pretrained.patch_embed.proj.weight"]
    )
    assert len(res.history) == 2


def test_layerwise_learning_rates():
    from data_schema.commands import HeadsModelConfig
    from labeler.train.heads.api import llrd_groups
    from labeler.train.heads.model import build_model

    model = build_model(HeadsModelConfig(backbone="tiny", input_size=28))
    model.unfreeze_last_blocks(3)
    groups = llrd_groups(model, lr=1e-5, layer_decay=0.5, head_lr=1e-4)
    assert [g["name"] for g in groups] == ["heads", "block3", "block2", "block1"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-5, 5e-6, 2.5e-6])
    with pytest.raises(ValueError, match="has 4 blocks"):
        model.unfreeze_last_blocks(5)


def test_augmentation_keeps_image_depth_and_masks_together(tiny_dataset):
    """Flipped and cropped items: the box object's pixels still carry the box's depth, not the wall's."""
    from labeler import open_dataset
    from labeler.train.heads.data import HeadsDataset

    reader = open_dataset(tiny_dataset)
    ds = HeadsDataset(tiny_dataset, reader.sample_ids, input_size=56, train=True, augment=True, seed=3)
    flips = 0
    for epoch in range(3):
        for i in range(len(ds)):
            item = ds[(epoch, i)]
            assert item["image"].shape == (3, 56, 56) and item["depth"].shape == (56, 56)
            obj = reader[ds.rows[i]].objects[0]  # the biggest object: the box in front
            sel = (item["ids"] == obj.id) & (item["weight"] > 0)
            if sel.sum() > 20:
                assert float(item["depth"][sel].median()) == pytest.approx(obj.depth_m_median, rel=0.1)
            from labeler.train.heads.data import Augment

            flips += Augment.draw(np.random.default_rng([3, epoch, i])).flip
    assert 0 < flips < 3 * len(ds)
    a, b = ds[(1, 2)], ds[(1, 2)]
    assert torch.equal(a["image"], b["image"])  # the draw depends on (seed, epoch, i) only


def test_split_and_sampler():
    from labeler.train.heads.data import resized_shape
    from labeler.train.sampling import EpochSampler, split_ids

    ids = [f"s{i:03d}" for i in range(20)]
    train, held = split_ids(ids, 0.2, seed=0)
    assert len(held) == 4 and sorted(train + held) == ids and split_ids(ids, 0.2, seed=0) == (train, held)
    assert split_ids(["a", "b"], 0.1, seed=0)[1] != []  # at least one held out
    shards = [list(EpochSampler(7, seed=1, rank=r, world=3)) for r in range(3)]
    assert all(len(s) == 3 for s in shards) and {i for s in shards for _, i in s} == set(range(7))
    assert resized_shape(480, 640, 518) == (518, 686) and resized_shape(96, 128, 56) == (56, 70)
