"""`labeler adapt-backbone` on the CPU with the tiny ViT: the objective's pieces by value, a short run
(loss falls, resume exact, output loads strictly where train-heads loads weights), bad inputs one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from labeler.cli.main import app

TINY = {
    "backbone": "tiny",
    "random_init": True,
    "head_epochs": 1,
    "epochs": 3,
    "unfreeze_last": 2,
    "lora_rank": 2,  # LoRA on blocks 0-1: its init must be seeded for a resumed run to equal this one
    "batch_size": 3,
    "global_size": 56,
    "local_size": 28,
    "local_crops": 2,
    "prototypes": 64,
    "head_hidden": 64,
    "head_bottleneck": 16,
    "lr": 1e-3,
    "backbone_lr": 1e-4,
    "momentum": 0.9,
    "warmup_frac": 0.0,
    "workers": 0,
    "heldout_frac": 0.25,
    "probe_epochs": 0,
}
TINY_FLAGS = (
    "--backbone tiny --random-init --head-epochs 1 --epochs 2 --unfreeze-last 1 --batch-size 3 "
    "--global-size 56 --local-size 28 --local-crops 2 --prototypes 64 --head-hidden 64 --head-bottleneck 16 "
    "--backbone-lr 1e-4 --momentum 0.9 --warmup-frac 0 --workers 0 --heldout-frac 0.25"
).split()


def _cfg(dataset: Path, out: Path, **overrides):
    from data_schema.dino_adapt import AdaptBackboneConfig

    return AdaptBackboneConfig(dataset=dataset, out=out, **{**TINY, **overrides})


@pytest.fixture(scope="session")
def tiny_adapt(tiny_dataset, tmp_path_factory):
    """One uninterrupted run: 1 warm-up epoch + 3 adaptation epochs on 6 images (2 held out); the last 2
    blocks train, LoRA on the first 2."""
    from labeler.train.dino.api import adapt_backbone
    from tests.train.conftest import torch_threads

    out = tmp_path_factory.getbasetemp() / "adapt-tiny"
    with torch_threads(1):  # as every test: float sums depend on the thread count (resume compares bits)
        return adapt_backbone(_cfg(tiny_dataset, out))


# ------------------------------------------------------------------ the objective


def test_sinkhorn_knopp_balances_prototypes_and_normalises_samples():
    from labeler.train.dino.losses import sinkhorn_knopp

    scores = torch.randn(48, 12, generator=torch.Generator().manual_seed(0))
    q = sinkhorn_knopp(scores, 1.0, iterations=3)
    assert q.shape == (48, 12) and bool((q >= 0).all())
    assert torch.allclose(q.sum(dim=1), torch.ones(48), atol=1e-5)  # every sample: a distribution
    before = (torch.softmax(scores, dim=1).sum(dim=0) - 4).abs().max()
    after = (q.sum(dim=0) - 4).abs().max()  # each of 12 prototypes should carry 48 / 12 = 4
    assert float(before) > 1 and float(after) < 0.05
    exact = sinkhorn_knopp(scores * 3, 0.5, iterations=200)  # peaked scores: more rounds, same fixed point
    assert torch.allclose(exact.sum(dim=0), torch.full((12,), 4.0), atol=1e-3)
    assert torch.allclose(exact.sum(dim=1), torch.ones(48), atol=1e-5)


def test_dino_loss_pairs_each_crop_with_the_other_views_only():
    from labeler.train.dino.losses import dino_loss

    k, b = 8, 4
    one_hot = torch.eye(k)
    t0, t1 = one_hot[[0] * b], one_hot[[1] * b]  # the teacher says prototype 0 for crop 1, 1 for crop 2
    teacher = torch.cat([t0, t1])
    big = 50.0
    right = torch.cat([t1, t0]) * big  # each student crop predicts the OTHER crop's prototype
    wrong = torch.cat([t0, t1]) * big  # each predicts its own crop's (never a target)
    none = torch.zeros(0, k)
    assert float(dino_loss(right, none, teacher, n_global=2, student_temp=1.0)) < 1e-6
    assert float(dino_loss(wrong, none, teacher, n_global=2, student_temp=1.0)) == pytest.approx(
        big, rel=1e-4
    )
    uniform = torch.zeros(3 * b, k)  # 3 local crops: every pair costs log K
    loss = dino_loss(right, uniform, teacher, n_global=2, student_temp=1.0)
    # 2 global pairs at 0 and 3 x 2 local pairs at log K, averaged over the 8 pairs
    assert float(loss) == pytest.approx(6 * math.log(k) / 8, rel=1e-5)


def test_ibot_loss_is_a_mean_per_crop_over_its_masked_patches():
    from labeler.train.dino.losses import cross_entropy, ibot_loss

    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(3, 6, dtype=torch.bool)
    masks[0, 2] = True
    masks[1, [0, 3, 5]] = True  # crop 3 is not masked: it counts as 0
    student, teacher = torch.randn(4, 5, generator=g), torch.softmax(torch.randn(4, 5, generator=g), dim=1)
    ce = cross_entropy(teacher, student, 0.1)
    expected = (ce[0] + ce[1:].mean()) / 3
    assert float(ibot_loss(student, teacher, masks, student_temp=0.1)) == pytest.approx(
        float(expected), rel=1e-6
    )
    assert float(ibot_loss(student[:0], teacher[:0], masks & False, student_temp=0.1)) == 0.0


def test_koleo_rewards_spread_features():
    from labeler.train.dino.losses import koleo_loss

    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert float(koleo_loss(square)) == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01], [0.99, 0.0]])
    assert float(koleo_loss(clustered)) > float(koleo_loss(square)) + 3
    assert float(koleo_loss(square[:1])) == 0.0  # one image in the last batch: nothing to spread


def test_block_masks_and_views_are_reproducible():
    from labeler.train.dino.data import CropSettings, block_mask, views

    mask = block_mask(np.random.default_rng(0), 16, 80)
    assert 40 <= int(mask.sum()) <= 80  # rectangles stop short of overshooting the count
    image = np.random.default_rng(2).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    c = CropSettings(112, 28, 3, mask_probability=1.0)
    a, b = (
        views(np.random.default_rng([0, 1, 2]), image, c),
        views(np.random.default_rng([0, 1, 2]), image, c),
    )
    other = views(np.random.default_rng([0, 2, 2]), image, c)
    assert a["global"].shape == (2, 112, 112, 3) and a["local"].shape == (3, 28, 28, 3)
    counts = a["masks"].sum(axis=1)  # 8 x 8 patches, 10-50 % of them masked
    assert a["masks"].shape == (2, 64) and bool(((counts >= 4) & (counts <= 32)).all()), counts
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["global"], other["global"])


def test_lora_merged_weights_give_the_lora_models_outputs():
    from labeler.models.dinov2_dpt import DinoViT
    from labeler.train.dino.model import add_lora, effective_state, encode
    from labeler.train.heads.model import TINY_SPEC

    torch.manual_seed(0)
    vit = DinoViT(TINY_SPEC)
    lora = add_lora(vit, range(3), 4, 8)
    base = {k: v.clone() for k, v in effective_state(lora).items()}  # B = 0: the adapters change nothing
    with torch.no_grad():  # B starts at zero (no change): give the adapters something to merge
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    x = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, :5] = True
    cls, patches = encode(lora, x, masks)
    state = effective_state(lora)
    import copy

    merged = copy.deepcopy(lora).merge_and_unload()
    assert isinstance(merged, DinoViT) and set(merged.state_dict()) == set(state)
    assert all(torch.allclose(merged.state_dict()[k], v, atol=1e-6) for k, v in state.items())
    m_cls, m_patches = encode(merged, x, masks)
    assert torch.allclose(cls, m_cls, atol=1e-5) and torch.allclose(patches, m_patches, atol=1e-5)
    plain = DinoViT(TINY_SPEC)
    plain.load_state_dict(state, strict=True)
    assert torch.allclose(encode(plain, x)[0], encode(lora, x)[0], atol=1e-5)
    plain.load_state_dict(base, strict=True)
    assert not torch.allclose(encode(plain, x)[0], cls, atol=1e-3)  # the adapters did change the outputs


def test_param_groups_cover_every_trainable_parameter_once(tmp_path):
    from labeler.models.dinov2_dpt import DinoViT
    from labeler.train.dino.model import Schedules
    from labeler.train.dino.task import DinoTask
    from labeler.train.heads.model import TINY_SPEC

    parent = tmp_path / "parent.pth"
    torch.save(DinoViT(TINY_SPEC).state_dict(), parent)
    cfg = _cfg(tmp_path, tmp_path / "r", unfreeze_last=1, lora_rank=2, layer_decay=0.5)
    task = DinoTask(
        cfg=cfg, phase="adapt", spec=TINY_SPEC, parent=parent, schedules=Schedules(10, 0.07, 0.04, 3, 0.9)
    )
    model = task.build_model()
    groups = task.param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"heads", "heads_no_decay", "block3", "block3_no_decay", "lora"}
    assert by_name["block3"]["lr"] == cfg.backbone_lr and by_name["lora"]["lr"] == cfg.lora_lr
    assert all(p.ndim == 1 or p.shape[-1] == 1 for p in by_name["heads_no_decay"]["params"])
    assert by_name["block3_no_decay"]["weight_decay"] == 0.0 and "weight_decay" not in by_name["block3"]
    vit = model.teacher["backbone"]
    assert not any(p.requires_grad for p in vit.parameters())  # the teacher never trains


# ------------------------------------------------------------------ a run


def test_loss_falls_and_the_run_records_its_parent(tiny_adapt, tiny_dataset):
    from labeler import open_dataset
    from labeler.io import sha256_file

    warm, adapt = tiny_adapt.warmup, tiny_adapt.adapt
    assert len(warm) == 1 and len(adapt) == 3
    first, last = warm[0].heldout_loss, adapt[-1].heldout_loss
    assert first is not None and last is not None and last < first - 0.5, (first, last)
    assert adapt[-1].feature_spread is not None and adapt[-1].feature_spread > 0.1  # not collapsed
    out = tiny_adapt.run_dir
    record = json.loads((out / "adapt" / "config.json").read_text())
    assert record["parent_sha256"] == sha256_file(out / "parent.pth")
    assert record["dataset_version"] == open_dataset(tiny_dataset).version
    assert record["n_train_images"] == 6 and record["n_heldout"] == 2


def test_output_loads_strictly_through_the_train_heads_loader(tiny_adapt):
    from data_schema.heads import HeadsModelConfig
    from labeler.train.heads.model import build_model
    from labeler.train.weights import load_backbone_weights

    out = tiny_adapt.run_dir
    adapted = torch.load(out / "backbone.pth", weights_only=True)
    parent = torch.load(out / "parent.pth", weights_only=True)
    assert {k: v.shape for k, v in adapted.items()} == {k: v.shape for k, v in parent.items()}
    changed = [k for k in parent if not torch.equal(parent[k], adapted[k])]
    assert "blocks.3.norm1.weight" in changed and "norm.weight" in changed  # trained in full
    assert "blocks.0.attn.qkv.weight" in changed  # LoRA, folded into the linear weights
    assert not {"blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "patch_embed.proj.weight"} & set(changed)
    model = build_model(HeadsModelConfig(backbone="tiny", task="depth", input_size=56))
    loaded = load_backbone_weights(model, out / "backbone.pth", backbone="tiny")
    assert loaded.kind == "dinov2" and loaded.n_tensors == len(parent)
    assert torch.equal(model.pretrained.blocks[3].mlp.fc1.weight, adapted["blocks.3.mlp.fc1.weight"])


def test_licences_go_with_the_adapted_backbone_into_train_heads(tiny_adapt, tiny_dataset, tmp_path):
    """OUT/licences.json beside OUT/backbone.pth (the random-init parent: licence "none", then the
    training data's models); a train-heads run on backbone.pth inherits them under its parent weights."""
    from data_schema.licences import LicenceRecord
    from labeler.train.heads.api import train_heads
    from tests.train.conftest import tiny_train_config

    out = tiny_adapt.run_dir
    rec = LicenceRecord.model_validate_json((out / "licences.json").read_text())
    assert [(m.role, m.model, m.licence) for m in rec.models] == [
        ("parent weights", "dinov2-random-init", "none"),
        ("training data: stereo", "sgbm", "Apache-2.0"),
        ("training data: masks", "classical", "labeler"),
    ]
    assert (out / "adapt" / "licences.json").read_text() == (out / "licences.json").read_text()
    train_heads(tiny_train_config(tiny_dataset, tmp_path / "heads", epochs=1, weights=out / "backbone.pth"))
    heads = LicenceRecord.model_validate_json((tmp_path / "heads" / "licences.json").read_text())
    assert [(m.role, m.model, m.commercial) for m in heads.models] == [
        ("parent weights", "dinov2", "unknown"),  # backbone.pth: no published name, no known hash
        ("parent weights: parent weights", "dinov2-random-init", "allowed"),
        ("parent weights: training data: stereo", "sgbm", "allowed"),
        ("parent weights: training data: masks", "classical", "allowed"),
        ("training data: stereo", "sgbm", "allowed"),
        ("training data: masks", "classical", "allowed"),
    ]


def test_resume_equals_the_uninterrupted_run(tiny_adapt, tiny_dataset, tmp_path):
    from labeler.train.dino.api import adapt_backbone

    cfg = _cfg(tiny_dataset, tmp_path / "r")
    part = adapt_backbone(cfg, stop_after_epoch=2)  # the warm-up and one adaptation epoch
    assert len(part.adapt) == 1 and part.summary is None
    whole = adapt_backbone(cfg.model_copy(update={"resume": True}))
    assert [r.train_loss for r in whole.adapt] == [r.train_loss for r in tiny_adapt.adapt]
    assert [r.heldout_loss for r in whole.adapt] == [r.heldout_loss for r in tiny_adapt.adapt]
    a = torch.load(tmp_path / "r" / "backbone.pth", weights_only=True)
    b = torch.load(tiny_adapt.run_dir / "backbone.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_rejected_samples_are_left_out_unless_asked(tiny_dataset, tmp_path):
    import shutil

    from labeler import open_dataset
    from labeler.dataset.decisions import current_labels, decide
    from labeler.train.dino.api import adapt_backbone

    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    labels = current_labels(open_dataset(ds))
    rejected = open_dataset(ds).sample_ids[0]
    decide(ds, sample_id=rejected, labels=labels[rejected], decision="reject", user="test")
    res = adapt_backbone(_cfg(ds, tmp_path / "r", head_epochs=0, epochs=1))
    ids = json.loads((tmp_path / "r" / "adapt" / "split.json").read_text())
    assert rejected not in ids["train"] + ids["heldout"] and res.n_train + res.n_heldout == 7
    kept = adapt_backbone(_cfg(ds, tmp_path / "k", head_epochs=0, epochs=1, include_rejected=True))
    assert kept.n_train + kept.n_heldout == 8


# ------------------------------------------------------------------ bad inputs: one line naming the flag


def _errors(args: list[str]) -> tuple[int, list[str]]:
    res = CliRunner().invoke(app, ["adapt-backbone", *args])
    return res.exit_code, [ln for ln in res.output.splitlines() if ln.startswith("error:")]


def test_bad_weights_are_one_line_naming_the_flag(tiny_dataset, tmp_path):
    from labeler.models.dinov2_dpt import DinoViT
    from labeler.train.heads.model import TINY_SPEC

    base = [str(tiny_dataset), "--out", str(tmp_path / "r")]
    code, lines = _errors([*base, "--backbone", "vits"])
    assert code == 1 and len(lines) == 1 and "--weights" in lines[0] and "--random-init" in lines[0]
    code, lines = _errors([*base, "--weights", str(tmp_path / "missing.pth")])
    assert code == 1 and len(lines) == 1 and "missing.pth: no such file; pass --weights" in lines[0]
    tiny = tmp_path / "tiny.pth"
    torch.save(DinoViT(TINY_SPEC).state_dict(), tiny)
    code, lines = _errors([*base, "--backbone", "vits", "--weights", str(tiny)])
    assert code == 1 and len(lines) == 1 and "--weights" in lines[0] and "--backbone vits" in lines[0]
    junk = tmp_path / "junk.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, junk)
    code, lines = _errors([*base, "--weights", str(junk)])
    assert code == 1 and len(lines) == 1 and "none of the three layouts" in lines[0]
    code, lines = _errors([*base, "--backbone", "tiny", "--random-init", "--unfreeze-last", "0"])
    assert code == 2 and len(lines) == 1 and "--unfreeze-last" in lines[0]
    code, lines = _errors([*base, "--backbone", "tiny", "--random-init", "--unfreeze-last", "9"])
    assert code == 1 and lines == ["error: --unfreeze-last 9: the tiny ViT has 4 blocks"]
    code, lines = _errors([*base, "--backbone", "tiny", "--random-init", "--images", str(tmp_path)])
    assert code == 1 and len(lines) == 1 and "--images" in lines[0]
    assert not (tmp_path / "r").exists()


def test_cli_run_probes_the_parent_and_the_export(tiny_dataset, tmp_path):
    """The CLI's success path with both probes, one epoch each (the slow tests run longer ones)."""
    out = tmp_path / "dino"
    flags = " ".join(TINY_FLAGS).replace("--epochs 2", "--epochs 1").split()
    args = ["adapt-backbone", str(tiny_dataset), "--out", str(out), *flags, "--probe-epochs", "1"]
    res = CliRunner().invoke(app, [*args, "--probe-input-size", "56", "--probe-batch-size", "3"])
    assert res.exit_code == 0, res.output
    assert "probe (depth head, 1 epochs, frozen backbone), held-out AbsRel:" in res.output
    _assert_probes_are_their_runs(out, json.loads((out / "summary.json").read_text()), epochs=1)


@pytest.mark.slow
def test_cli_lora_run_feeds_train_heads(tiny_dataset, tmp_path):
    """The user's chain: adapt-backbone with LoRA + the probe, then train-heads --weights OUT/backbone.pth."""
    out = tmp_path / "dino"
    flags = [*TINY_FLAGS, "--lora-rank", "4", "--export", "student", "--probe-epochs", "2"]
    args = ["adapt-backbone", str(tiny_dataset), "--out", str(out), *flags, "--probe-input-size", "56"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "probe (depth head, 2 epochs, frozen backbone), held-out AbsRel:" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"] == "student"
    _assert_probes_are_their_runs(out, summary, epochs=2)
    assert summary["abs_rel_change"] == pytest.approx(
        summary["probe_after"]["abs_rel"] - summary["probe_before"]["abs_rel"]
    )
    heads = [
        "train-heads", str(tiny_dataset), "--out", str(tmp_path / "heads"), "--backbone", "tiny", "--weights",
        str(out / "backbone.pth"), "--task", "depth", "--input-size", "56", "--epochs", "1", "--workers", "0",
        "--batch-size", "3",
    ]  # fmt: skip
    res = CliRunner().invoke(app, heads)
    assert res.exit_code == 0, res.output
    assert "dinov2:" in res.output and "backbone.pth" in res.output


@pytest.mark.slow
def test_torchrun_two_processes(tiny_dataset, tmp_path):
    """Both phases and the probes under torchrun (gloo): the collective Sinkhorn-Knopp, rank 0 reports."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "labeler.cli", "adapt-backbone", str(tiny_dataset), "--out", str(out), *TINY_FLAGS]
    cmd += ["--batch-size", "2", "--probe-epochs", "1", "--probe-input-size", "56"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("6 training images, 2 held out") == 1  # only rank 0 reports
    steps = (out / "adapt" / "steps.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 2 * 2  # 6 images / 2 ranks / batch 2 -> 2 steps per epoch on each rank
    summary = json.loads((out / "summary.json").read_text())
    _assert_probes_are_their_runs(out, summary, epochs=1)


def _assert_probes_are_their_runs(out: Path, summary: dict, *, epochs: int) -> None:
    """Each probe figure is its train-heads run's last held-out row; before probes the parent, after the
    export; the two runs differ only in those weights."""
    from labeler.io import sha256_file

    for when, weights in (("before", out / "parent.pth"), ("after", out / "backbone.pth")):
        probe, run = summary[f"probe_{when}"], out / "probe" / when
        rows = json.loads((run / "metrics.json").read_text())
        assert probe["epochs"] == len(rows) == epochs and probe["run"] == str(run)
        assert (probe["abs_rel"], probe["delta1"]) == (rows[-1]["abs_rel"], rows[-1]["delta1"])
        assert sha256_file(Path(probe["weights"])) == sha256_file(weights)
    assert summary["probe_before"]["abs_rel"] != summary["probe_after"]["abs_rel"]
