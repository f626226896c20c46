"""The heads commands on the command line: one-line errors, and the demo chain on a tiny run."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labeler.cli.main import app


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


# ------------------------------------------------------------------ review decisions count


HEADS_FLAGS = ["--backbone", "tiny", "--input-size", "56", "--max-depth-m", "10", "--batch-size", "3"]
ONE_EPOCH = ["--epochs", "1", "--workers", "0", "--heldout-frac", "0.25", "--previews", "0"]


def _reject(dataset, *sample_ids: str) -> None:
    from labeler import open_dataset
    from labeler.dataset.decisions import current_labels, decide

    labels = current_labels(open_dataset(dataset))
    for sid in sample_ids:
        decide(dataset, sample_id=sid, labels=labels[sid], decision="reject", user="test")


def _split(run) -> dict[str, list[str]]:
    return json.loads((run / "split.json").read_text())


def test_train_heads_leaves_rejected_samples_out_unless_asked(tiny_dataset, tmp_path):
    """The split (what the engine trains and scores) has no rejected sample; --include-rejected keeps them."""
    import shutil

    from labeler import open_dataset
    from labeler.train.sampling import split_ids

    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    train, held = split_ids(open_dataset(ds).sample_ids, 0.25, seed=0)
    _reject(ds, train[0], held[0])
    res = CliRunner().invoke(
        app, ["train-heads", str(ds), "--out", str(tmp_path / "r"), *HEADS_FLAGS, *ONE_EPOCH]
    )
    assert res.exit_code == 0, res.output
    assert _split(tmp_path / "r") == {"train": train[1:], "heldout": held[1:]}
    assert "on 5 samples (1 held out)" in res.output.splitlines()[0]
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["rejected_left_out"] == sorted([train[0], held[0]]) and record["n_train"] == 5
    res = CliRunner().invoke(
        app,
        [
            "train-heads",
            str(ds),
            "--out",
            str(tmp_path / "all"),
            *HEADS_FLAGS,
            *ONE_EPOCH,
            "--include-rejected",
        ],
    )
    assert res.exit_code == 0, res.output
    assert _split(tmp_path / "all") == {"train": train, "heldout": held}
    assert json.loads((tmp_path / "all" / "config.json").read_text())["rejected_left_out"] == []


def test_everything_rejected_is_one_line_naming_the_flag(tiny_dataset, tmp_path):
    import shutil

    from labeler import open_dataset

    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    _reject(ds, *open_dataset(ds).sample_ids)
    res = CliRunner().invoke(
        app, ["train-heads", str(ds), "--out", str(tmp_path / "r"), *HEADS_FLAGS, *ONE_EPOCH]
    )
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 1 and lines == [
        f"error: {ds}: no ok samples to train on "
        "(8 rejected by a review left out; --include-rejected keeps them)"
    ]


def test_finetune_counts_decisions_made_after_the_frozen_run(tiny_dataset, tmp_path):
    """Rejected after train-heads: finetune neither trains nor scores them, and scores the frozen best
    epoch again on the held-out samples left (initial.json), so the comparison is on the same samples."""
    import shutil

    from data_schema import EpochMetrics, FinetuneComparison, HeldoutFigures

    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    run = tmp_path / "r"
    res = CliRunner().invoke(app, ["train-heads", str(ds), "--out", str(run), *HEADS_FLAGS, *ONE_EPOCH])
    assert res.exit_code == 0, res.output
    base = _split(run)
    assert len(base["heldout"]) == 2  # so that one stays held out
    _reject(ds, base["train"][0], base["heldout"][0])
    ft = ["finetune", str(run), "--unfreeze-last", "1", "--epochs", "1", "--workers", "0"]
    res = CliRunner().invoke(app, [*ft, "--out", str(tmp_path / "ft")])
    assert res.exit_code == 0, res.output
    assert _split(tmp_path / "ft") == {"train": base["train"][1:], "heldout": base["heldout"][1:]}
    comp = FinetuneComparison.model_validate_json((tmp_path / "ft" / "comparison.json").read_text())
    rescored = HeldoutFigures.model_validate_json((tmp_path / "ft" / "initial.json").read_text())
    frozen = EpochMetrics.model_validate(json.loads((run / "metrics.json").read_text())[0]).heldout
    assert comp.frozen == rescored and rescored != frozen
    res = CliRunner().invoke(app, [*ft, "--out", str(tmp_path / "ft-all"), "--include-rejected"])
    assert res.exit_code == 0, res.output
    assert _split(tmp_path / "ft-all") == base and not (tmp_path / "ft-all" / "initial.json").exists()
    comp = FinetuneComparison.model_validate_json((tmp_path / "ft-all" / "comparison.json").read_text())
    assert comp.frozen == frozen


def test_resume_after_new_rejections_is_refused_in_one_line(tiny_dataset, tmp_path):
    """A review decision made after a run started changes its split: --resume would silently train and
    score other samples than the run it continues, so it is refused (a new --out starts over)."""
    import shutil

    from labeler import open_dataset
    from labeler.train.sampling import split_ids

    ds = shutil.copytree(tiny_dataset, tmp_path / "ds")
    args = ["train-heads", str(ds), "--out", str(tmp_path / "r"), *HEADS_FLAGS, *ONE_EPOCH]
    assert CliRunner().invoke(app, args).exit_code == 0
    train, _ = split_ids(open_dataset(ds).sample_ids, 0.25, seed=0)
    _reject(ds, train[0])
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 1, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.strip()]
    assert "--resume with another train / held-out split (1 sample(s) in or out" in line
    assert "start a new --out" in line
