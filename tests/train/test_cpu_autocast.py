"""The engine's CUDA-only branch — each trainer's forward pass and held-out evaluation under bfloat16
autocast — and `labeler predict`'s, run on the CPU under CPU autocast
(`labeler.models.precision.cpu_autocast`): the matmuls run in bfloat16, the losses, weights, optimiser
state and predictions stay float32 and finite, and the weights move."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labeler.models.precision import cpu_autocast
from tests.conftest import layer_output_dtypes
from tests.train.conftest import tiny_train_config


def _trained_in_bf16(seen: list, run: Path, before: dict[str, torch.Tensor] | None = None) -> None:
    """The run's linears / convolutions computed in bfloat16 (a few float32 ones are the float32 islands:
    losses, heads the tasks keep out of autocast); its step losses finite; last.pt's weights float32,
    finite, and moved from `before` where given."""
    assert seen.count(torch.bfloat16) >= len(seen) / 2, f"{seen.count(torch.bfloat16)} of {len(seen)}"
    steps = (run / "steps.csv").read_text().splitlines()
    col = steps[0].split(",").index("loss")
    losses = [float(line.split(",")[col]) for line in steps[1:]]
    assert losses and all(math.isfinite(x) for x in losses)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    weights = {k: v for k, v in last["model"].items() if v.is_floating_point()}
    assert {v.dtype for v in weights.values()} == {torch.float32}
    assert all(torch.isfinite(v).all() for v in weights.values())
    moments = [s["exp_avg"] for s in last["optimizer"]["state"].values()]
    assert moments and all(m.dtype == torch.float32 and torch.isfinite(m).all() for m in moments)
    if before is not None:
        common = [k for k in weights if k in before]
        assert common and any(not torch.equal(before[k], weights[k]) for k in common)


@pytest.fixture(scope="module")
def heads_run(tiny_dataset, tmp_path_factory) -> tuple[Path, list]:
    from labeler.train import train_heads

    out = tmp_path_factory.mktemp("autocast") / "heads"
    with cpu_autocast(), layer_output_dtypes() as seen:
        train_heads(tiny_train_config(tiny_dataset, out, epochs=1))
    return out, seen


def test_train_heads_step_under_cpu_autocast(heads_run):
    run, seen = heads_run
    _trained_in_bf16(seen, run)


def test_amp_off_or_outside_the_stand_in_stays_float32(tiny_dataset, tmp_path):
    from labeler.train import train_heads

    with cpu_autocast(), layer_output_dtypes() as off:
        train_heads(tiny_train_config(tiny_dataset, tmp_path / "off", epochs=1, amp=False))
    with layer_output_dtypes() as cpu:
        train_heads(tiny_train_config(tiny_dataset, tmp_path / "cpu", epochs=1))
    assert off and set(off) == set(cpu) == {torch.float32}


def test_finetune_step_under_cpu_autocast(heads_run, tmp_path):
    from data_schema.commands import FinetuneConfig
    from labeler.train import finetune

    base, _ = heads_run
    before = torch.load(base / "checkpoints" / "best.pt", weights_only=False)["model"]
    with cpu_autocast(), layer_output_dtypes() as seen:
        finetune(FinetuneConfig(run=base, unfreeze_last=2, lr=1e-3, epochs=1, out=tmp_path / "ft"))
    _trained_in_bf16(seen, tmp_path / "ft", before)


def test_predict_under_cpu_autocast(heads_run, tiny_dataset):
    from labeler.io import read_rgb
    from labeler.train.heads.predictor import HeadsPredictor

    run, _ = heads_run
    rgb = read_rgb(tiny_dataset.parent / "pairs" / "left" / "pair_000.png")
    with cpu_autocast():
        with layer_output_dtypes() as seen:
            got = HeadsPredictor.from_run(run).predict(rgb)
    ref = HeadsPredictor.from_run(run).predict(rgb)
    assert seen and set(seen) == {torch.bfloat16}
    assert got.depth_m is not None and ref.depth_m is not None
    assert got.depth_m.dtype == np.float32 and got.depth_m.shape == rgb.shape[:2]
    assert np.all(np.isfinite(got.depth_m)) and np.all(got.depth_m > 0)
    # the same weights: bf16 depth within a few per cent of float32's
    assert float(np.median(np.abs(got.depth_m / ref.depth_m - 1))) < 0.05
    assert got.ids.dtype == np.uint16 and got.ids.shape == rgb.shape[:2]


def test_train_sam2_step_under_cpu_autocast(tiny_dataset, tmp_path):
    from labeler.testing.sam2_tiny import write_tiny_sam2
    from labeler.train.sam2.api import train_sam2
    from tests.train.test_train_sam2 import _cfg

    tiny = write_tiny_sam2(tmp_path / "parent")
    with cpu_autocast(), layer_output_dtypes() as seen:
        train_sam2(_cfg(tiny_dataset, tmp_path / "run", tiny, epochs=1))
    before = {f"sam.{k}": v for k, v in torch.load(tiny[1], weights_only=False)["model"].items()}
    _trained_in_bf16(seen, tmp_path / "run", before)


def test_adapt_backbone_step_under_cpu_autocast(tiny_dataset, tmp_path):
    from labeler.train.dino.api import adapt_backbone
    from tests.train.test_adapt_backbone import _cfg

    with cpu_autocast(), layer_output_dtypes() as seen:
        adapt_backbone(_cfg(tiny_dataset, tmp_path / "run", epochs=1))
    warmup = torch.load(tmp_path / "run" / "warmup" / "checkpoints" / "last.pt", weights_only=False)["model"]
    _trained_in_bf16(seen, tmp_path / "run" / "warmup")
    _trained_in_bf16(seen, tmp_path / "run" / "adapt", warmup)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is what a machine without CUDA says")
def test_gpu_flags_on_a_machine_without_cuda_are_one_line(tiny_dataset, tmp_path):
    """The accepted `--gpu` branches need CUDA (docs/gpu.md); without it, each command says so in one
    line, naming the flag and the way out, and writes nothing."""
    from typer.testing import CliRunner

    from labeler.cli.main import app

    runs = {
        "train-heads": [
            *("train-heads", str(tiny_dataset), "--out", str(tmp_path / "h")),
            *("--backbone", "tiny", "--random-init", "--gpu", "0"),
        ],
        "pseudo-label": [
            "pseudo-label",
            str(tiny_dataset.parent / "pairs"),
            "--calib",
            str(tiny_dataset.parent / "calib.yaml"),
            "--out",
            str(tmp_path / "ds"),
            "--gpu",
            "0",
        ],
    }
    for name, argv in runs.items():
        res = CliRunner().invoke(app, argv)
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert res.exit_code != 0 and len(errors) == 1, (name, res.output)
        assert "--gpu 0" in errors[0] and ("CPU" in errors[0] or "cpu" in errors[0]), errors[0]
    assert not (tmp_path / "h").exists() and not (tmp_path / "ds").exists()
