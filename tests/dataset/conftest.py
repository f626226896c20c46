"""The dataset tests' small labelled dataset: six 96x64 plane pairs, 2 per shard (3 shards), built once
per test module (module scope: a module that moves its sources or damages a copy never touches another
module's), and a fresh copy of it per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """ROOT with ROOT/rect (the pairs), ROOT/calib.yaml and ROOT/ds (the labelled dataset, valid)."""
    from labeler.dataset.validate import validate_dataset
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs
    from tests.dataset.test_dataset_v2 import quick_cfg

    root = tmp_path_factory.mktemp("six-pairs")
    write_plane_pairs(root / "rect", 6, 96, 64, seed=2)
    calib = identity_calibration_yaml(root / "calib.yaml", 96, 64)
    run_pseudo_label(quick_cfg(root / "rect", calib, root / "ds"))
    assert validate_dataset(root / "ds") == []
    return root


@pytest.fixture
def copy(base, tmp_path) -> Path:
    """A copy of the dataset that the test may damage."""
    shutil.copytree(base / "ds", tmp_path / "ds")
    return tmp_path / "ds"
