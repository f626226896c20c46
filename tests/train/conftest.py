"""A tiny dataset written by the real pipeline, and one short tiny-model run on it, built once per session.

The builders are plain functions that cache under pytest's base temp dir, so tests/test_predict.py can
share the same run without a second copy of a session fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

TINY_INPUT = 56  # 4x4 patches: every step is a few hundred ms on one CPU core
TINY_EPOCHS = 10


def make_tiny_dataset(base: Path) -> Path:
    """8 textured-plane pairs (128x96, a box in front of a wall) through `labeler pseudo-label` (sgbm,
    classical masks, sync scheduler)."""
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = base / "heads-tiny-dataset"
    ds = root / "ds"
    if not (ds / "manifest.json").is_file():
        write_plane_pairs(root / "pairs", 8, 128, 96, seed=11)
        calib = identity_calibration_yaml(root / "calib.yaml", 128, 96)
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=root / "pairs", calib=calib, out=ds, scheduler="sync", previews=False, progress=False
            )
        )
    return ds


def tiny_train_config(dataset: Path, out: Path, **overrides):
    from data_schema.commands import HeadsModelConfig, TrainHeadsConfig

    fields = {
        "dataset": dataset,
        "out": out,
        "model": HeadsModelConfig(backbone="tiny", input_size=TINY_INPUT, max_depth_m=10.0),
        "epochs": TINY_EPOCHS,
        "batch_size": 3,
        "lr": 2e-3,
        "warmup_frac": 0.0,
        "augment": False,
        "workers": 0,
        "heldout_frac": 0.25,
        "previews": 1,
    }
    fields.update(overrides)
    return TrainHeadsConfig(**fields)


def make_tiny_run(base: Path) -> Path:
    """train-heads (fusion, tiny random ViT) for TINY_EPOCHS epochs; 6 train / 2 held-out samples."""
    from labeler.train import train_heads

    run = base / "heads-tiny-run"
    if (
        not (run / "metrics.json").is_file()
        or len(json.loads((run / "metrics.json").read_text())) < TINY_EPOCHS
    ):
        with torch_threads(1):
            train_heads(tiny_train_config(make_tiny_dataset(base), run, resume=True))
    return run


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.getbasetemp())


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Tiny convolutions on a shared 2-core machine: one thread is ~50x faster than two fighting threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


# ------------------------------------------------------------------ train-stereo

REPO = Path(__file__).resolve().parents[2]
# name, shape and dtype of every tensor of the official model's state dict, per ViT size
# (benchmarks/make_foundation_stereo_vectors.py)
FS_OFFICIAL_KEYS = REPO / "tests" / "models" / "data" / "foundation_stereo_official_keys.json"
STEREO_SIZE = (96, 128)  # (height, width): multiples of 32, so held-out pairs need no padding


def make_vits_release(base: Path) -> Path:
    """labeler's deterministic ViT-S release (random-like weights), once per session (the folder the
    FoundationStereo backend tests use too)."""
    from tests.conftest import foundation_stereo_release

    return foundation_stereo_release(base, "vits")


def make_stereo_dataset(base: Path, n: int = 3, name: str = "stereo-tiny") -> tuple[Path, Path]:
    """(dataset, truth folder): n box pairs 128x96 (box at 16 px in front of a wall at 6 px) labelled by
    sgbm + classical masks, and their exact disparities as truth/<sample_id>.npy."""
    from data_schema.commands import PseudoLabelConfig
    from labeler.io import write_png
    from labeler.testing.scenes import box_pair
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml

    h, w = STEREO_SIZE
    root = base / name
    ds, truth = root / "ds", root / "truth"
    if not (ds / "manifest.json").is_file():
        rng = np.random.default_rng(5)
        truth.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pair = box_pair(rng, w, h)
            write_png(root / "pairs" / "left" / f"pair_{i:03d}.png", pair.left)
            write_png(root / "pairs" / "right" / f"pair_{i:03d}.png", pair.right)
            np.save(truth / f"pair_{i:03d}.npy", pair.disparity_px)
        calib = identity_calibration_yaml(root / "calib.yaml", w, h)
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=root / "pairs", calib=calib, out=ds, scheduler="sync", previews=False, progress=False
            )
        )
    return ds, truth


def tiny_stereo_config(dataset: Path, out: Path, weights: Path, **overrides):
    """One step of 2 pairs (64x96 crops, 2 GRU iterations), 1 held-out pair at 96x128."""
    from data_schema.stereo_train import TrainStereoConfig

    fields = {
        "dataset": dataset,
        "out": out,
        "stereo_weights": weights,
        "epochs": 1,
        "batch_size": 2,
        "crop": (64, 96),
        "train_iters": 2,
        "valid_iters": 2,
        "max_disp": 32,
        "heldout_frac": 0.34,
        "workers": 0,
        "previews": 1,
        "warmup_frac": 0.0,
    }
    fields.update(overrides)
    return TrainStereoConfig(**fields)


@pytest.fixture(scope="session")
def vits_release(tmp_path_factory) -> Path:
    return make_vits_release(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def stereo_dataset(tmp_path_factory) -> tuple[Path, Path]:
    return make_stereo_dataset(tmp_path_factory.getbasetemp())


TINY_STEREO_FLAGS = (
    "--epochs 1 --batch-size 2 --crop 64x96 --train-iters 2 --valid-iters 2 --max-disp 32 "
    "--heldout-frac 0.34 --workers 0 --previews 1 --lr 2e-5 --warmup-frac 0"
).split()


@pytest.fixture(scope="session")
def stereo_run(tmp_path_factory, stereo_dataset, vits_release) -> tuple[Path, str]:
    """(run folder, what the command printed): one tiny `labeler train-stereo` run with truth, shared by the
    tests that read its folder."""
    from typer.testing import CliRunner

    from labeler.cli.main import app

    run = tmp_path_factory.getbasetemp() / "stereo-tiny-run"
    ds, truth = stereo_dataset
    args = [str(ds), "--stereo-weights", str(vits_release), "--out", str(run), "--truth", str(truth)]
    res = CliRunner().invoke(app, ["train-stereo", *args, *TINY_STEREO_FLAGS])
    assert res.exit_code == 0, res.output
    return run, res.output
