"""Shared fixtures: a synthetic stereo rig with known truth, its board captures, and demo scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_schema.calibration import BoardSpec

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHESSBOARD = BoardSpec(kind="chessboard", cols=9, rows=6, square_m=0.03)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def rig():
    from labeler.synthetic import SyntheticRig

    return SyntheticRig.arducam_like(640, 480)


@pytest.fixture(scope="session")
def board_views(rig):
    """12 rendered (left, right) chessboard views."""
    from labeler.synthetic import render_board_views

    return render_board_views(rig, CHESSBOARD, 12, seed=3)


def write_side_by_side(folder: Path, views, prefix: str = "board") -> list[Path]:
    from labeler.io import write_png

    return [write_png(folder / f"{prefix}_{i:03d}.png", np.hstack(v)) and folder / f"{prefix}_{i:03d}.png"
            for i, v in enumerate(views)]


@pytest.fixture(scope="session")
def board_dir(tmp_path_factory, board_views) -> Path:
    folder = tmp_path_factory.mktemp("boards")
    write_side_by_side(folder, board_views)
    return folder


@pytest.fixture(scope="session")
def calibrated(board_dir):
    """(CalibrationResult, calib YAML path) for the synthetic rig."""
    from labeler.calibration import calibrate, save_calibration

    result = calibrate(board_dir, rig="test-rig", board=CHESSBOARD)
    path = board_dir.parent / "test-rig.yaml"
    save_calibration(result.calibration, path)
    return result, path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo rig's scene captures (no boards) with truth."""
    from labeler.demo import write_demo

    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder, n_boards=0, n_scenes=2, seed=0)
    return folder
