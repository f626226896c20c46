"""Data-parallel training under torchrun on the CPU (gloo): the same code path as a multi-node job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.train.conftest import TINY_INPUT, tiny_train_config


@pytest.mark.slow  # 45 s on 2 shared cores: mostly the two spawned interpreters importing labeler
def test_the_gpu_spawn_path_runs_on_two_gloo_processes(tiny_dataset, tmp_path, monkeypatch):
    """The `--gpu 0,1` spawn path (`engine.spawn_processes`) on two CPU processes with gloo: rank 0 writes
    the run, each rank takes half of every step's samples (3 steps of 1 + 1 samples for 6 samples, as one
    process's 3 steps of 2), and the first step, taken before any update, has one process's loss."""
    import csv
    from dataclasses import replace

    import torch

    from labeler.train import engine
    from labeler.train.heads import api

    specs: list[engine.EngineSpec] = []
    monkeypatch.setattr(api, "launch", lambda spec, gpus, **kw: specs.append(spec) or [])
    api.train_heads(tiny_train_config(tiny_dataset, tmp_path / "two", epochs=1, batch_size=1, previews=0))
    (spec,) = specs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned processes' torch threads: two on two cores
    two = engine.spawn_processes(spec, [torch.device("cpu")] * 2)
    one = engine.fit(replace(spec, run_dir=tmp_path / "one", batch_size=2))
    assert [h.epoch for h in two] == [h.epoch for h in one] == [1]
    rows = {n: list(csv.DictReader((tmp_path / n / "steps.csv").open())) for n in ("two", "one")}
    assert len(rows["two"]) == len(rows["one"]) == 3
    # the same two samples in step 1; the depth loss is a mean over valid pixels, not over samples, so the
    # average of the ranks' losses is that of the pair only up to their valid-pixel counts
    assert float(rows["two"][0]["loss"]) == pytest.approx(float(rows["one"][0]["loss"]), rel=0.05)
    a = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = spec.task.build_model().state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the two ranks trained


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
