"""The heads commands on the command line: one-line errors, and the demo chain on a tiny run."""

from __future__ import annotations

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
