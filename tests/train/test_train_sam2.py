"""`labeler train-sam2` with the tiny random SAM2 on the tiny pseudo-label dataset: the loss falls, resume is
exact, the checkpoint loads strictly through the official `build_sam2` and the labeler `sam2` backend, and
each bad input is one line naming its flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from labeler.cli.main import app
from tests.train.conftest import make_tiny_dataset


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> tuple[Path, Path]:
    from labeler.testing.sam2_tiny import write_tiny_sam2

    return write_tiny_sam2(tmp_path_factory.getbasetemp() / "sam2-tiny-parent")


@pytest.fixture(scope="session")
def sam2_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.getbasetemp())


def _cfg(dataset: Path, out: Path, tiny: tuple[Path, Path], **overrides):
    from data_schema.sam2_train import TrainSam2Config

    config, checkpoint = tiny
    fields = {
        "dataset": dataset,
        "out": out,
        "sam2_checkpoint": checkpoint,
        "sam2_config": str(config),
        "epochs": 2,
        "batch_size": 3,
        "lr": 4e-3,
        "warmup_frac": 0.0,
        "corrections": 1,
        "objects_per_image": 2,
        "heldout_objects": 4,
        "workers": 0,
        "heldout_frac": 0.25,
        "amg_points_per_side": 4,
        "amg_pred_iou_thresh": 0.0,
        "amg_stability_thresh": 0.0,
        "previews": 1,
    }
    fields.update(overrides)
    return TrainSam2Config(**fields)


def _errors(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="session")
def sam2_run(tmp_path_factory, sam2_dataset, tiny_sam2):
    """One 6-epoch run (6 training images, 2 held out) shared by the tests that read its folder."""
    from labeler.train.sam2.api import train_sam2

    out = tmp_path_factory.getbasetemp() / "sam2-tiny-run"
    return train_sam2(_cfg(sam2_dataset, out, tiny_sam2, epochs=6))


def test_loss_falls_and_the_run_records_its_inputs(sam2_run, sam2_dataset, tiny_sam2):
    from data_schema import Sam2EpochMetrics, Sam2HeldoutFigures, Sam2RunSummary
    from labeler import open_dataset
    from labeler.io import sha256_file
    from labeler.train.sam2.api import check_inputs

    res = sam2_run
    losses = [h.train_loss for h in res.history]
    assert len(losses) == 6 and losses[-1] < 0.75 * losses[0], losses
    assert res.n_train == 6 and res.n_heldout == 2
    run = res.run_dir
    summary = Sam2RunSummary.model_validate_json((run / "summary.json").read_text())
    assert summary.parent_sha256 == sha256_file(tiny_sam2[1])
    assert summary.dataset_version == open_dataset(sam2_dataset).version
    assert summary.checkpoint_sha256 == sha256_file(run / "sam2.pt")
    before = Sam2HeldoutFigures.model_validate_json((run / "initial.json").read_text())
    assert before == summary.before
    # the recorded figures are those of the weights they name: the parent's before, sam2.pt's after
    assert _heldout_figures(sam2_dataset, tiny_sam2, run, tiny_sam2[1]) == before
    assert _heldout_figures(sam2_dataset, tiny_sam2, run, run / "sam2.pt") == summary.after != before
    targets = check_inputs(_cfg(sam2_dataset, run, tiny_sam2)).targets.ids
    held = json.loads((run / "split.json").read_text())["heldout"]
    assert before.n_objects == sum(min(len(targets[s]), 4) for s in held) > 0  # --heldout-objects 4
    rows = [Sam2EpochMetrics.model_validate(r) for r in json.loads((run / "metrics.json").read_text())]
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r.train_focal is not None and r.point_miou is not None for r in rows)
    record = json.loads((run / "config.json").read_text())
    assert record["command"] == "train-sam2" and record["parent_sha256"] == summary.parent_sha256
    assert record["objects"]["train"] == summary.n_train_objects > 0
    for name in (
        "metrics.csv",
        "steps.csv",
        "curves.png",
        "previews/epoch_000.png",
        "previews/epoch_006.png",
    ):
        assert (run / name).is_file(), name


def _heldout_figures(dataset: Path, tiny: tuple[Path, Path], run: Path, weights: Path):
    """The held-out figures of `weights` on `run`'s held-out images, evaluated afresh (no training)."""
    from labeler.train.dist import Dist
    from labeler.train.engine import loader
    from labeler.train.sam2.api import check_inputs
    from labeler.train.sam2.task import Sam2Task
    from labeler.train.sampling import EpochSampler

    cfg = _cfg(dataset, run, tiny, sam2_checkpoint=weights)
    checked = check_inputs(cfg)
    task = Sam2Task(
        cfg=cfg, config_path=checked.config_path, targets=checked.targets.ids, image_size=checked.image_size
    )
    _, held = task.datasets([], json.loads((run / "split.json").read_text())["heldout"])
    sampler = EpochSampler(len(held), seed=cfg.seed, shuffle=False)
    batches = loader(held, sampler, cfg.model_copy(update={"workers": 0}), Dist())
    figures, _ = task.evaluate(task.build_model(), batches, torch.device("cpu"), amp=False, epoch=0)
    return figures


def test_only_the_decoder_and_prompt_encoder_change(sam2_run, tiny_sam2):
    parent = torch.load(tiny_sam2[1], map_location="cpu", weights_only=True)["model"]
    new = torch.load(sam2_run.run_dir / "sam2.pt", map_location="cpu", weights_only=True)
    assert set(new) == {"model"} and set(new["model"]) == set(parent)
    changed = {k for k in parent if not torch.equal(parent[k], new["model"][k])}
    assert changed and all(k.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for k in changed)
    assert not any(k.startswith(("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1")) for k in changed)


def test_checkpoint_loads_strictly_through_build_sam2_and_the_backend(sam2_run, tiny_sam2, sam2_dataset):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labeler import open_dataset
    from labeler.segment.sam2_amg import Sam2MaskBackend
    from labeler.segment.sam2_model import import_sam2
    from labeler.testing.sam2_tiny import tiny_sam2_config

    import_sam2()
    from sam2.build_sam import build_sam2

    config = tiny_sam2[0]
    ckpt = sam2_run.run_dir / "sam2.pt"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config.parent), version_base="1.2"):
            official = build_sam2(config.stem, str(ckpt), device="cpu")  # strict load_state_dict inside
    finally:
        GlobalHydra.instance().clear()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in official.state_dict().items())
    backend = Sam2MaskBackend(tiny_sam2_config((config, ckpt)), device="cpu")
    image = open_dataset(sam2_dataset).read(0, ("left",))["left"]
    masks = backend.masks(image)
    assert masks.masks.shape[1:] == image.shape[:2] and masks.masks.dtype == bool
    assert torch.equal(
        backend.model.sam_mask_decoder.iou_token.weight, saved["sam_mask_decoder.iou_token.weight"]
    )


def test_resume_equals_an_uninterrupted_run(sam2_dataset, tiny_sam2, tmp_path):
    from labeler.train.sam2.api import train_sam2

    straight = train_sam2(_cfg(sam2_dataset, tmp_path / "a", tiny_sam2))
    train_sam2(_cfg(sam2_dataset, tmp_path / "b", tiny_sam2), stop_after_epoch=1)
    resumed = train_sam2(_cfg(sam2_dataset, tmp_path / "b", tiny_sam2, resume=True))
    a = torch.load(tmp_path / "a" / "sam2.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "sam2.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h.train_loss for h in straight.history] == [h.train_loss for h in resumed.history]
    assert [h.point_miou for h in straight.history] == [h.point_miou for h in resumed.history]


def test_train_encoder_uses_layer_wise_rates(sam2_dataset, tiny_sam2, tmp_path):
    from labeler.train.sam2.task import Sam2Task

    cfg = _cfg(sam2_dataset, tmp_path / "e", tiny_sam2, train_encoder=True, encoder_lr_factor=0.5)
    task = Sam2Task(cfg=cfg, config_path=tiny_sam2[0], targets={}, image_size=256)
    model = task.build_model()
    groups = task.param_groups(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable) and len(grouped) == len(set(grouped))
    lrs = {g["name"]: g["lr"] for g in groups}
    n = len(model.sam.image_encoder.trunk.blocks)
    assert lrs["decoder"] == pytest.approx(4e-3)
    assert lrs[f"encoder.{n + 1:02d}"] == pytest.approx(2e-3)  # the neck: lr x factor
    assert lrs["encoder.00"] == pytest.approx(2e-3 * 0.9 ** (n + 1))  # embeddings: the lowest
    assert list(lrs.values())[1:] == sorted(list(lrs.values())[1:])


def test_cached_embeddings_equal_a_fresh_encoder_pass(tiny_sam2, tmp_path):
    """The frozen encoder's cached output is what it computes again; a trained encoder is never cached."""
    from labeler.segment.sam2_model import load_sam2
    from labeler.train.sam2.net import PromptedSam2, PromptSettings

    sam = load_sam2(str(tiny_sam2[0]), tiny_sam2[1])
    cached = PromptedSam2(sam, PromptSettings(), train_encoder=False, cache=True).eval()
    fresh = PromptedSam2(sam, PromptSettings(), train_encoder=False, cache=False).eval()
    image = torch.randint(
        0, 256, (2, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    rows = torch.tensor([4, 9])
    first = cached.features(image, rows)
    assert sorted(cached._cache) == [4, 9] and not fresh._cache
    again = cached.features(torch.zeros_like(image), rows)  # read from the cache, not the (blank) images
    ref = fresh.features(image, rows)
    for a, b, c in zip([first[0], *first[1]], [again[0], *again[1]], [ref[0], *ref[1]], strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    trained = PromptedSam2(sam, PromptSettings(), train_encoder=True, cache=True)
    trained.features(image, rows)
    assert not trained._cache


def test_rejected_and_weak_objects_are_never_targets(sam2_dataset, tmp_path):
    import shutil

    from labeler import open_dataset
    from labeler.dataset.decisions import current_labels, decide
    from labeler.train.sam2.data import Sam2Dataset, target_objects

    ds_path = tmp_path / "ds"
    shutil.copytree(sam2_dataset, ds_path)
    reader = open_dataset(ds_path)
    objects = reader.objects.to_table(columns=["sample_id", "id", "score", "area_px"]).to_pylist()
    first = objects[0]
    labels = current_labels(reader)
    decide(
        ds_path,
        sample_id=first["sample_id"],
        labels=labels[first["sample_id"]],
        decision="reject",
        object_id=first["id"],
        user="test",
    )
    sample = reader.sample_ids[-1]
    decide(ds_path, sample_id=sample, labels=labels[sample], decision="reject", user="test")
    kept = target_objects(reader, reader.sample_ids, min_score=0, min_area=0, include_rejected=False)
    assert first["id"] not in kept.ids.get(first["sample_id"], []) and sample not in kept.ids
    assert kept.rejected >= 2 and kept.kept + kept.rejected == kept.total == len(objects)
    everything = target_objects(reader, reader.sample_ids, min_score=0, min_area=0, include_rejected=True)
    assert everything.kept == len(objects)
    big = max(o["area_px"] for o in objects)
    strict = target_objects(reader, reader.sample_ids, min_score=0, min_area=big, include_rejected=True)
    assert (
        strict.kept == sum(o["area_px"] >= big for o in objects)
        and strict.small == len(objects) - strict.kept
    )
    items = Sam2Dataset(ds_path, reader.sample_ids, kept.ids, image_size=64, n_objects=8, train=False)
    assert sample not in items.sample_ids
    item = items[0]
    assert item["masks"].shape == (8, 64, 64) and int(item["valid"].sum()) == len(items.objects[0])


def test_a_model_that_finds_no_mask_labels_a_sample_with_no_objects():
    """A retrained SAM2 may keep no mask of an image: the sample then has no object, it does not fail."""
    from labeler.depth import instance_map

    ids, source = instance_map(np.zeros((0, 6, 8), bool), np.zeros(0, np.float32))
    assert ids.shape == (6, 8) and not ids.any() and source.size == 0


@pytest.mark.parametrize(
    ("case", "flag"),
    [
        ("no-checkpoint", "--sam2-checkpoint"),
        ("bad-config", "--sam2-config"),
        ("foreign", "--sam2-checkpoint"),
        ("other-config", "--sam2-checkpoint"),
        ("min-score", "--min-score"),
    ],
)
def test_bad_inputs_are_one_line_naming_the_flag(case, flag, sam2_dataset, tiny_sam2, tmp_path):
    config, ckpt = tiny_sam2
    args = ["--sam2-checkpoint", str(ckpt), "--sam2-config", str(config)]
    if case == "no-checkpoint":
        args[1] = str(tmp_path / "missing.pt")
    elif case == "bad-config":
        args[3] = "sam2.1_hiera_q"
    elif case == "foreign":
        torch.save({"weights": {}}, tmp_path / "foreign.pt")
        args[1] = str(tmp_path / "foreign.pt")
    elif case == "other-config":
        args[3] = "sam2.1_hiera_t"  # the released tiny architecture: keys / shapes differ
    else:
        args += ["--min-score", "1.0"]
    res = CliRunner().invoke(app, ["train-sam2", str(sam2_dataset), "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 1, res.output
    errors = _errors(res.output)
    assert len(errors) == 1 and flag in errors[0], res.output
    assert "Traceback" not in res.output and not (tmp_path / "run" / "sam2.pt").exists()


def test_cli_run_then_pseudo_label_with_its_checkpoint(sam2_dataset, tiny_sam2, tmp_path):
    """The command end to end, then its checkpoint labels the dataset's pairs through `--masks sam2`."""
    from labeler import open_dataset

    config, ckpt = tiny_sam2
    run = tmp_path / "run"
    flags = "--epochs 2 --batch-size 3 --lr 4e-3 --corrections 1 --workers 0 --heldout-frac 0.25"
    res = CliRunner().invoke(
        app,
        [
            "train-sam2",
            str(sam2_dataset),
            "--sam2-checkpoint",
            str(ckpt),
            "--sam2-config",
            str(config),
            "--out",
            str(run),
            "--amg-points-per-side",
            "4",
            *flags.split(),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "held-out mIoU, one centre click" in res.output
    assert f"--sam2-checkpoint {run / 'sam2.pt'}" in res.output
    relabelled = tmp_path / "relabelled"
    root = sam2_dataset.parent  # the pairs and the calibration the tiny dataset was made from
    label = [
        "pseudo-label",
        str(root / "pairs"),
        "--calib",
        str(root / "calib.yaml"),
        "--out",
        str(relabelled),
        "--masks",
        "sam2",
        "--sam2-checkpoint",
        str(run / "sam2.pt"),
        "--sam2-config",
        str(config),
        "--sam2-points-per-side",
        "4",
        "--sam2-pred-iou-thresh",
        "0",
        "--sam2-stability-score-thresh",
        "0",
        "--scheduler",
        "sync",
        "--no-previews",
    ]
    res = CliRunner().invoke(app, label)
    assert res.exit_code == 0, res.output
    ds = open_dataset(relabelled)
    assert len(ds) == len(open_dataset(sam2_dataset)) and ds.manifest.masks.name == "sam2"
    assert str(ds.manifest.masks.checkpoint) == str(run / "sam2.pt")
    res = CliRunner().invoke(app, ["validate", str(relabelled)])
    assert res.exit_code == 0, res.output
