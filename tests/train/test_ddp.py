"""Data-parallel training under torchrun on the CPU (gloo): the same code path as a multi-node job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.train.conftest import TINY_INPUT


@pytest.mark.slow
def test_torchrun_two_processes(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "labeler.cli",
        "train-heads",
        str(tiny_dataset),
        "--backbone",
        "tiny",
        "--input-size",
        str(TINY_INPUT),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--previews",
        "1",
    ]
    res = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("2 epochs on 6 samples") == 1  # only rank 0 reports
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    steps = (out / "steps.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 2 * 2  # 6 samples / 2 ranks / batch 2 -> 2 steps per epoch on each rank


@pytest.mark.slow
def test_torchrun_train_stereo(stereo_dataset, vits_release, tmp_path):
    """train-stereo on the same engine under torchrun (gloo): rank 0 reports, the ranks share the steps."""
    from tests.train.conftest import TINY_STEREO_FLAGS

    out = tmp_path / "ddp-stereo"
    ds, truth = stereo_dataset
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "labeler.cli", "train-stereo", str(ds), "--stereo-weights", str(vits_release)]
    cmd += ["--out", str(out), "--truth", str(truth), *TINY_STEREO_FLAGS, "--batch-size", "1"]
    res = subprocess.run(
        cmd,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("1 epochs on 2 pairs (1 held out)") == 1  # only rank 0 reports
    steps = (out / "steps.csv").read_text().strip().splitlines()[1:]
    assert len(steps) == 1  # 2 pairs / 2 ranks / batch 1: one step on each rank
    assert (out / "model_best_bp2.pth").is_file() and (out / "summary.json").is_file()
