"""A train-stereo output says how to run it: `--max-disp 32` trains at 32, but OUT/cfg.yaml (the file the
official demo and `--stereo-weights` read) keeps the parent's 416, so relabelling with the output alone runs
the new weights at the parent's range."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from labeler.cli.main import app
from tests.train.conftest import TINY_STEREO_FLAGS


def _one_pair(dataset: Path, folder: Path) -> Path:
    pairs = dataset.parent / "pairs"
    for side in ("left", "right"):
        (folder / side).mkdir(parents=True)
        shutil.copy(pairs / side / "pair_000.png", folder / side / "pair_000.png")
    return folder


def test_relabel_with_the_output_alone_runs_at_the_parents_max_disp(
    stereo_dataset, vits_release, tmp_path, monkeypatch
):
    from labeler.models.foundation_stereo import loader

    parent = yaml.safe_load((vits_release.parent / "cfg.yaml").read_text())
    assert parent["max_disp"] == 416
    ds, _ = stereo_dataset
    out = tmp_path / "run"
    args = [str(ds), "--stereo-weights", str(vits_release), "--out", str(out)]
    res = CliRunner().invoke(app, ["train-stereo", *args, *TINY_STEREO_FLAGS])
    assert res.exit_code == 0, res.output
    assert TINY_STEREO_FLAGS[TINY_STEREO_FLAGS.index("--max-disp") + 1] == "32"

    cfg = yaml.safe_load((out / "cfg.yaml").read_text())
    assert cfg["max_disp"] == 416 and cfg["labeler_train_max_disp"] == 32
    assert cfg["valid_iters"] == parent["valid_iters"]  # --valid-iters 2 was the held-out pass only
    assert {k: v for k, v in cfg.items() if not k.startswith("labeler_")} == parent
    assert json.loads((out / "config.json").read_text())["max_disp"] == 32  # what it trained at

    built: list[tuple[int | None, int]] = []
    real = loader.load_foundation_stereo

    def recording(weights, *, max_disp=None, device="cpu"):
        model = real(weights, max_disp=max_disp, device=device)
        built.append((max_disp, model.args.max_disp))
        return model

    monkeypatch.setattr(loader, "load_foundation_stereo", recording)
    pairs = _one_pair(ds, tmp_path / "pairs")
    relabelled = tmp_path / "relabelled"
    res = CliRunner().invoke(
        app,
        [
            "pseudo-label",
            str(pairs),
            "--calib",
            str(ds.parent / "calib.yaml"),
            "--out",
            str(relabelled),
            "--stereo",
            "foundation-stereo",
            "--stereo-weights",
            str(out / "model_best_bp2.pth"),
            "--valid-iters",
            "1",
            "--masks",
            "classical",
            "--scheduler",
            "sync",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "1 samples ok, 0 failed" in res.output, res.output
    assert built and set(built) == {(None, 416)}  # no override: the cost volume spans cfg.yaml's 416 px
    manifest = json.loads((relabelled / "manifest.json").read_text())
    assert manifest["stereo"]["max_disp"] is None
    assert manifest["stereo"]["weights"] == str(out / "model_best_bp2.pth")
