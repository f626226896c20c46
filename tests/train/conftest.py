"""A tiny dataset written by the real pipeline, and one short tiny-model run on it, built once per session.

The builders are plain functions that cache under pytest's base temp dir, so tests/test_predict.py can
share the same run without a second copy of a session fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TINY_INPUT = 56  # 4x4 patches: every step is a few hundred ms on one CPU core
TINY_EPOCHS = 10


def make_tiny_dataset(base: Path) -> Path:
    """8 textured-plane pairs (128x96, a box in front of a wall) through `labeler pseudo-label` (sgbm,
    classical masks, sync scheduler)."""
    from labeler.configs import PseudoLabelConfig
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
    from labeler.configs import HeadsModelConfig, TrainHeadsConfig

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
