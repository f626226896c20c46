"""`labeler train-stereo` with labeler's deterministic ViT-S release (random-like weights): the training pass,
the release-layout checkpoint it writes, the records of the run, and one line per bad input."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from labeler.cli.main import app
from tests.train.conftest import FS_OFFICIAL_KEYS, TINY_STEREO_FLAGS


def _errors(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def test_sequence_pass_matches_inference_and_trains_every_parameter(vits_release):
    """The last training iteration is exactly `estimate`'s disparity; after one loss every parameter that
    trains has a gradient (DDP needs that), the DAv2 branch none."""
    from labeler.models.foundation_stereo.loader import load_foundation_stereo
    from labeler.train.stereo.losses import sequence_loss
    from labeler.train.stereo.task import train_with_frozen_batch_norm, trainable_modules

    model = load_foundation_stereo(vits_release, max_disp=32)
    g = torch.Generator().manual_seed(0)
    left = torch.rand(1, 3, 32, 64, generator=g) * 255
    right = torch.roll(left, -4, dims=-1)
    with torch.no_grad():
        seq = model.estimate_sequence(left, right, iters=2)
        assert torch.equal(seq.iterations[-1], model.estimate(left, right, iters=2).disparity)
    trainable_modules(model, ())
    train_with_frozen_batch_norm(model)
    assert model.training and not model.cnet.norm1.training  # batch-norm statistics frozen
    seq = model.estimate_sequence(left, right, iters=2)
    assert len(seq.iterations) == 2 and seq.initial.shape == (1, 1, 32, 64)
    target = torch.full((1, 32, 64), 4.0)
    sequence_loss(seq.initial, seq.iterations, target, torch.ones_like(target)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(p.grad is None for p in model.feature.dino.parameters())


def test_release_writer_keeps_the_release_layout(vits_release, tmp_path):
    """Keys, shapes and dtypes of the official key list; the file and its cfg.yaml load strictly."""
    from labeler.models.foundation_stereo.loader import load_foundation_stereo
    from labeler.train.stereo.task import write_release

    model = load_foundation_stereo(vits_release)
    with torch.no_grad():
        model.update_block.disp_head.conv[0].bias.add_(1.0)  # a trained-looking change
    cfg = {**yaml.safe_load((vits_release.parent / "cfg.yaml").read_text()), "labeler_image_size": [128, 96]}
    path = write_release(tmp_path / "out", model, cfg, epoch=3, step=12)
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ck) == {"model", "global_step", "epoch"} and (ck["epoch"], ck["global_step"]) == (3, 12)
    keys = json.loads(FS_OFFICIAL_KEYS.read_text())["vits"]
    assert {k for k, _, _ in keys} == set(ck["model"]) and len(keys) == len(ck["model"])
    assert all(
        list(ck["model"][k].shape) == shape and str(ck["model"][k].dtype) == dtype for k, shape, dtype in keys
    )
    assert yaml.safe_load((tmp_path / "out" / "cfg.yaml").read_text()) == cfg
    again = load_foundation_stereo(path)
    assert torch.equal(again.update_block.disp_head.conv[0].bias, model.update_block.disp_head.conv[0].bias)


@pytest.mark.slow
def test_run_writes_a_release_checkpoint_and_its_records(stereo_run, stereo_dataset, vits_release):
    from data_schema import StereoEpochMetrics, StereoHeldoutFigures, StereoRunSummary
    from labeler import open_dataset
    from labeler.io import sha256_file
    from labeler.models.foundation_stereo.loader import load_foundation_stereo

    run, _ = stereo_run
    ck = torch.load(run / "model_best_bp2.pth", map_location="cpu", weights_only=True)
    assert set(ck) == {"model", "global_step", "epoch"} and ck["epoch"] == 1 and ck["global_step"] == 1
    keys = json.loads(FS_OFFICIAL_KEYS.read_text())["vits"]
    assert {k for k, _, _ in keys} == set(ck["model"]) and len(keys) == len(ck["model"])
    assert all(
        list(ck["model"][k].shape) == shape and str(ck["model"][k].dtype) == dtype for k, shape, dtype in keys
    )
    parent = torch.load(vits_release, map_location="cpu", weights_only=True)["model"]
    changed = {k.split(".")[0] for k in parent if not torch.equal(parent[k], ck["model"][k])}
    assert {"cnet", "update_block", "cost_agg", "feature"} <= changed
    assert all(torch.equal(parent[k], ck["model"][k]) for k in parent if k.startswith("feature.dino."))
    load_foundation_stereo(run / "model_best_bp2.pth")  # strictly, through cfg.yaml beside it
    parent_cfg = yaml.safe_load((vits_release.parent / "cfg.yaml").read_text())
    cfg = yaml.safe_load((run / "cfg.yaml").read_text())
    assert {k: cfg[k] for k in parent_cfg} == parent_cfg
    ds = open_dataset(stereo_dataset[0])
    assert cfg["labeler_image_size"] == [128, 96] and cfg["labeler_dataset_version"] == ds.version

    summary = StereoRunSummary.model_validate_json((run / "summary.json").read_text())
    assert summary.parent_sha256 == sha256_file(vits_release) and summary.dataset_version == ds.version
    assert summary.weights_sha256 == sha256_file(run / "model_best_bp2.pth") and summary.teacher == "sgbm"
    before = StereoHeldoutFigures.model_validate_json((run / "initial.json").read_text())
    (row,) = [StereoEpochMetrics.model_validate(h) for h in json.loads((run / "metrics.json").read_text())]
    assert summary.before == before and summary.after == row.heldout and summary.best_epoch == 1
    for figures in (before, row.heldout):
        assert all(v is not None and np.isfinite(v) for v in figures.model_dump().values()), figures
    assert summary.change.truth_epe_px == pytest.approx(row.truth_epe_px - before.truth_epe_px)
    record = json.loads((run / "config.json").read_text())
    assert record["command"] == "train-stereo" and record["parent_sha256"] == summary.parent_sha256
    assert record["config"]["crop"] == [64, 96] and record["dataset_version"] == ds.version
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 2 and len(split["heldout"]) == 1
    for name in (
        "curves.png",
        "steps.csv",
        "metrics.csv",
        "previews/epoch_000.png",
        "previews/epoch_001.png",
    ):
        assert (run / name).is_file(), name


@pytest.mark.slow
def test_command_prints_the_summary_figures(stereo_run):
    from data_schema import StereoRunSummary

    run, output = stereo_run
    s = StereoRunSummary.model_validate_json((run / "summary.json").read_text())
    lines = output.splitlines()
    assert lines[0].endswith("1 epochs on 2 pairs (1 held out); best epoch 1")
    b, a = s.before.truth_epe_px, s.after.truth_epe_px
    assert f"  held-out EPE vs truth, px: {b:.3f} (parent) -> {a:.3f} ({a - b:+.3f})" in lines
    assert (
        f"checkpoint {run / 'model_best_bp2.pth'} (cfg.yaml beside it; use it with --stereo-weights)" in lines
    )


@pytest.mark.slow
def test_resume_at_the_last_epoch_trains_nothing_more(stereo_run, stereo_dataset, vits_release):
    run, _ = stereo_run
    ds, truth = stereo_dataset
    args = [str(ds), "--stereo-weights", str(vits_release), "--out", str(run), "--truth", str(truth)]
    res = CliRunner().invoke(app, ["train-stereo", *args, *TINY_STEREO_FLAGS])
    assert res.exit_code == 1 and "already holds a run; pass --resume" in res.output
    steps = (run / "steps.csv").read_text()
    res = CliRunner().invoke(app, ["train-stereo", *args, *TINY_STEREO_FLAGS, "--resume", "--lr", "1e-3"])
    assert res.exit_code == 1 and "--resume with different settings (lr)" in res.output
    assert (run / "steps.csv").read_text() == steps


# ------------------------------------------------------------------ bad input: one line each


def _release_copy(folder: Path, weights: Path, cfg: dict | None) -> Path:
    """A release folder with the weights linked (not copied: 250 MB) and `cfg` as its cfg.yaml."""
    folder.mkdir(parents=True)
    os.symlink(weights, folder / "model_best_bp2.pth")
    if cfg is not None:
        (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "model_best_bp2.pth"


def _train(dataset: Path, weights: Path, out: Path, *flags: str):
    return CliRunner().invoke(
        app, ["train-stereo", str(dataset), "--stereo-weights", str(weights), "--out", str(out), *flags]
    )


def test_checkpoint_without_cfg_yaml(stereo_dataset, vits_release, tmp_path):
    weights = _release_copy(tmp_path / "r", vits_release, None)
    res = _train(stereo_dataset[0], weights, tmp_path / "out")
    (line,) = _errors(res.output)
    assert res.exit_code == 1 and "cfg.yaml not found beside the checkpoint" in line
    assert "--stereo-weights" in line and not (tmp_path / "out").exists()


def test_checkpoint_of_another_release(stereo_dataset, vits_release, tmp_path):
    """A file whose tensors are not this release's (a Depth Anything V2 layout) beside a ViT-S cfg.yaml."""
    folder = tmp_path / "r"
    folder.mkdir()
    torch.save({"model": {"pretrained.cls_token": torch.zeros(1, 1, 384)}}, folder / "model_best_bp2.pth")
    (folder / "cfg.yaml").write_text((vits_release.parent / "cfg.yaml").read_text())
    res = _train(stereo_dataset[0], folder / "model_best_bp2.pth", tmp_path / "out", "--crop", "64x96")
    (line,) = _errors(res.output)
    assert res.exit_code == 1 and "keys do not match FoundationStereo vit_size=vits of cfg.yaml" in line
    assert "--stereo-weights" in line


def test_crop_larger_than_the_images_names_the_flag(stereo_dataset, vits_release, tmp_path):
    res = _train(stereo_dataset[0], vits_release, tmp_path / "out", "--crop", "128x160")
    (line,) = _errors(res.output)
    assert res.exit_code == 1 and line.startswith("error: --crop 128x160 is larger than the images of")
    assert "at most 96x128" in line
    res = _train(stereo_dataset[0], vits_release, tmp_path / "out", "--crop", "64x100")
    assert res.exit_code == 2 and _errors(res.output) == [
        "error: --crop: crop 64x100: height and width must be positive multiples of 32"
    ]


def test_dataset_of_another_size_than_the_checkpoints_training(stereo_dataset, vits_release, tmp_path):
    cfg = {**yaml.safe_load((vits_release.parent / "cfg.yaml").read_text()), "labeler_image_size": [640, 480]}
    weights = _release_copy(tmp_path / "r", vits_release, cfg)
    res = _train(stereo_dataset[0], weights, tmp_path / "out", "--crop", "64x96")
    (line,) = _errors(res.output)
    assert res.exit_code == 1 and "cfg.yaml: the checkpoint was fine-tuned on 640x480 images" in line
    assert "has 128x96" in line and "--allow-other-size" in line


def test_dataset_without_stereo_confidence(vits_release, tmp_path_factory, tmp_path, monkeypatch):
    """A real dataset whose stereo backend wrote no confidence (every confidence NaN): one line naming it."""
    import dataclasses

    from labeler.stereo.sgbm import SgbmBackend
    from tests.train.conftest import make_stereo_dataset

    plain = SgbmBackend.disparity

    def without_confidence(self, left, right):
        d = plain(self, left, right)
        return dataclasses.replace(d, confidence=np.full_like(d.disparity_px, np.nan))

    monkeypatch.setattr(SgbmBackend, "disparity", without_confidence)
    ds, _ = make_stereo_dataset(tmp_path_factory.getbasetemp(), n=2, name="stereo-no-confidence")
    monkeypatch.undo()
    res = _train(ds, vits_release, tmp_path / "out", "--crop", "64x96")
    assert res.exit_code == 1 and _errors(res.output) == [
        f"error: {ds}: made without stereo confidence (no finite confidence where the disparity is valid); "
        "relabel it with a stereo backend that writes one (sgbm, foundation-stereo)"
    ]
    assert not (tmp_path / "out").exists()


def test_max_disp_the_configs_accept_is_what_the_hourglass_runs(vits_release, tmp_path):
    """The 3-D hourglass halves the 1/4-resolution disparity axis three times: 32 x k runs, 16 x odd
    does not (a shape error deep in the network), and both configs refuse it with one line."""
    from pydantic import ValidationError

    from data_schema.backends import FoundationStereoConfig
    from data_schema.stereo_train import TrainStereoConfig
    from labeler.models.foundation_stereo.loader import load_foundation_stereo

    left = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 255
    right = torch.roll(left, -2, dims=-1)
    for max_disp in (32, 64):  # accepted, and the network runs
        model = load_foundation_stereo(vits_release, max_disp=max_disp)
        with torch.no_grad():
            assert model(left, right, iters=1).shape == (1, 1, 32, 64)
        FoundationStereoConfig(weights=vits_release, max_disp=max_disp)
        TrainStereoConfig(dataset=tmp_path, out=tmp_path, stereo_weights=vits_release, max_disp=max_disp)
    unchecked = copy.copy(model.args)  # 48 past the checks, as the old multiple-of-16 rule let it through
    object.__setattr__(unchecked, "max_disp", 48)
    model.args = unchecked
    with torch.no_grad(), pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        model(left, right, iters=1)
    for max_disp in (48, 80):
        with pytest.raises(ValueError, match=rf"max_disp {max_disp} \(a positive multiple of 32\)"):
            load_foundation_stereo(vits_release, max_disp=max_disp)
        with pytest.raises(ValidationError, match="multiple of 32"):
            FoundationStereoConfig(weights=vits_release, max_disp=max_disp)
        with pytest.raises(ValidationError, match="multiple of 32"):
            TrainStereoConfig(dataset=tmp_path, out=tmp_path, stereo_weights=vits_release, max_disp=max_disp)


# ------------------------------------------------------------------ review decisions count


def test_rejected_pairs_are_neither_trained_nor_scored_unless_asked(
    stereo_dataset, vits_release, tmp_path, monkeypatch
):
    """The split the engine gets (train and held-out ids) has no rejected pair; include_rejected keeps it."""
    import shutil

    import labeler.train.engine as engine
    from labeler import open_dataset
    from labeler.dataset.decisions import current_labels, decide
    from labeler.train.sampling import split_ids
    from labeler.train.stereo.api import train_stereo
    from tests.train.conftest import tiny_stereo_config

    ds = shutil.copytree(stereo_dataset[0], tmp_path / "ds")
    reader = open_dataset(ds)
    train, held = split_ids(reader.sample_ids, 0.34, seed=0)
    decide(ds, sample_id=train[0], labels=current_labels(reader)[train[0]], decision="reject", user="t")
    specs = []

    def launch(spec, stop_after_epoch=None) -> list:  # what the engine would train on; no training
        specs.append(spec)
        return []

    monkeypatch.setattr(engine, "launch", launch)
    train_stereo(tiny_stereo_config(ds, tmp_path / "out", vits_release))
    train_stereo(tiny_stereo_config(ds, tmp_path / "all", vits_release, include_rejected=True))
    kept, everything = specs
    assert (kept.train_ids, kept.heldout_ids) == (train[1:], held)
    assert kept.record["rejected_left_out"] == [train[0]] and kept.record["n_train"] == len(train) - 1
    assert (everything.train_ids, everything.heldout_ids) == (train, held)
    assert everything.record["rejected_left_out"] == []
    items, _ = kept.task.datasets(kept.train_ids, kept.heldout_ids)
    assert items.sample_ids == train[1:]


# ------------------------------------------------------------------ shown to work (smaller make stereo-demo)

EPE_DROP = 0.5  # held-out EPE against truth after <= this x before (measured: see benchmarks/RESULTS.md)


@pytest.mark.slow
def test_fine_tuning_lowers_heldout_epe_against_truth(vits_release, tmp_path_factory):
    """From the random-like release, 8 epochs on 5 box pairs: the held-out pair's EPE against its exact
    disparity falls by half or more."""
    from labeler.train.stereo.api import train_stereo
    from tests.train.conftest import make_stereo_dataset, tiny_stereo_config

    base = tmp_path_factory.getbasetemp()
    ds, truth = make_stereo_dataset(base, n=6, name="stereo-six")
    cfg = tiny_stereo_config(
        ds,
        base / "stereo-six-run",
        vits_release,
        truth=truth,
        epochs=8,
        batch_size=1,
        lr=5e-5,
        heldout_frac=0.2,
    )
    res = train_stereo(cfg)
    assert res.summary is not None and (res.n_train, res.n_heldout) == (5, 1)
    before, after = res.summary.before.truth_epe_px, res.summary.after.truth_epe_px
    assert before is not None and after is not None
    assert after <= EPE_DROP * before, f"held-out EPE vs truth {before:.2f} -> {after:.2f} px"


@pytest.mark.slow
def test_the_fine_tuned_checkpoint_labels_a_dataset(stereo_run, stereo_dataset, tmp_path):
    """train-stereo -> pseudo-label --stereo-weights <new> -> validate."""
    run, _ = stereo_run
    pairs = stereo_dataset[0].parent / "pairs"
    calib = stereo_dataset[0].parent / "calib.yaml"
    out = tmp_path / "relabelled"
    res = CliRunner().invoke(
        app,
        [
            "pseudo-label",
            str(pairs),
            "--calib",
            str(calib),
            "--out",
            str(out),
            "--stereo",
            "foundation-stereo",
            "--stereo-weights",
            str(run / "model_best_bp2.pth"),
            "--valid-iters",
            "2",
            "--max-disp",
            "32",
            "--masks",
            "classical",
            "--scheduler",
            "sync",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3 samples ok, 0 failed" in res.output
    res = CliRunner().invoke(app, ["validate", str(out)])
    assert res.exit_code == 0 and f"{out}: valid" in res.output, res.output


@pytest.mark.slow
def test_resume_equals_uninterrupted(stereo_dataset, vits_release, tmp_path):
    """Two epochs, or one then --resume: the same weights, optimiser state, history and best checkpoint."""
    from labeler.train.stereo.api import train_stereo
    from tests.train.conftest import tiny_stereo_config

    ds, truth = stereo_dataset
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train_stereo(tiny_stereo_config(ds, whole, vits_release, truth=truth, epochs=2, batch_size=1))
    train_stereo(
        tiny_stereo_config(ds, parts, vits_release, truth=truth, epochs=2, batch_size=1), stop_after_epoch=1
    )
    assert json.loads((parts / "metrics.json").read_text())[-1]["epoch"] == 1
    train_stereo(
        tiny_stereo_config(ds, parts, vits_release, truth=truth, epochs=2, batch_size=1, resume=True)
    )
    a, b = (torch.load(r / "checkpoints" / "last.pt", weights_only=False) for r in (whole, parts))
    assert a["epoch"] == b["epoch"] == 2 and all(
        torch.equal(a["model"][k], b["model"][k]) for k in a["model"]
    )
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    strip = [
        {k: v for k, v in h.items() if k not in ("seconds", "train_samples_per_s")} for h in a["history"]
    ]
    assert strip == [
        {k: v for k, v in h.items() if k not in ("seconds", "train_samples_per_s")} for h in b["history"]
    ]
    assert (whole / "initial.json").read_text() == (parts / "initial.json").read_text()
    best_a, best_b = (torch.load(r / "model_best_bp2.pth", weights_only=True) for r in (whole, parts))
    assert best_a["epoch"] == best_b["epoch"] and best_a["global_step"] == best_b["global_step"]
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])
