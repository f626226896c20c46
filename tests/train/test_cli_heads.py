"""The heads commands on the command line: one-line errors, and the demo chain on a tiny run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labeler.cli import app


def test_help():
    for cmd in ("train-heads", "finetune", "predict"):
        res = CliRunner().invoke(app, [cmd, "--help"])
        assert res.exit_code == 0, res.output


def test_missing_weights_is_one_line_naming_the_flag(tiny_dataset, tmp_path):
    res = CliRunner().invoke(
        app, ["train-heads", str(tiny_dataset), "--out", str(tmp_path / "r"), "--backbone", "vits"]
    )
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--weights" in lines[0] and "--random-init" in lines[0], res.output
    res = CliRunner().invoke(
        app,
        [
            "train-heads",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "r"),
            "--backbone",
            "vitb",
            "--weights",
            str(tmp_path / "missing.pth"),
        ],
    )
    assert res.exit_code == 1 and "missing.pth: no such file; pass --weights" in res.output
    assert not (tmp_path / "r").exists()


def test_bad_input_size_names_the_flag(tiny_dataset, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "train-heads",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "r"),
            "--backbone",
            "tiny",
            "--input-size",
            "50",
        ],
    )
    assert res.exit_code == 2 and "not a multiple of the patch size 14" in res.output


def test_existing_run_needs_resume(tiny_run, tmp_path):
    from tests.train.conftest import make_tiny_dataset

    res = CliRunner().invoke(
        app,
        [
            "train-heads",
            str(make_tiny_dataset(tiny_run.parent)),
            "--out",
            str(tiny_run),
            "--backbone",
            "tiny",
        ],
    )
    assert res.exit_code == 1 and "pass --resume" in res.output


def test_train_and_finetune_print_their_figures(tiny_dataset, tmp_path):
    """The commands' summary lines carry the figures of metrics.json and comparison.json."""
    import re

    from data_schema import EpochMetrics, FinetuneComparison

    run = tmp_path / "r"
    flags = ["--backbone", "tiny", "--input-size", "56", "--max-depth-m", "10", "--batch-size", "3"]
    res = CliRunner().invoke(
        app, ["train-heads", str(tiny_dataset), "--out", str(run), *flags, "--epochs", "1", "--workers", "0"]
    )
    assert res.exit_code == 0, res.output
    (last,) = [EpochMetrics.model_validate(h) for h in json.loads((run / "metrics.json").read_text())]
    lines = res.output.splitlines()
    assert f"train loss {last.train_loss:.4f} -> {last.train_loss:.4f}" in lines[0]
    assert lines[1] == (
        f"held-out (epoch 1): AbsRel {last.abs_rel:.3f}, δ1 {last.delta1:.3f}, fg IoU {last.fg_iou:.3f}, "
        f"mask mIoU {last.mask_miou:.3f}, mask AP50 {last.mask_ap50:.3f}, loss {last.heldout_loss:.3f}"
    )
    res = CliRunner().invoke(app, ["finetune", str(run), "--unfreeze-last", "1", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    comp = FinetuneComparison.model_validate_json((run / "finetune" / "comparison.json").read_text())
    shown = re.findall(r"^  held-out (\w+): (\S+) \(frozen\) -> (\S+) \((\S+)\)$", res.output, re.M)
    assert [k for k, *_ in shown] == ["heldout_loss", "abs_rel", "delta1", "fg_iou", "mask_miou", "mask_ap50"]
    for k, before, after, change in shown:
        assert before == f"{getattr(comp.frozen, k):.4f}" and after == f"{getattr(comp.finetuned, k):.4f}"
        assert change == f"{getattr(comp.change, k):+.4f}"
