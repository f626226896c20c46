"""Shared fixtures: a synthetic stereo rig with known truth, its board captures, and demo scenes; writers of
synthetic rectified pairs (rendered by `labeler.testing.scenes`) and of their identity calibration; the demo
sequence labelled with --track."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from data_schema.calibration import BoardSpec

# FoundationStereo: the official code's key lists, parity vectors and their input pair (written by
# benchmarks/make_foundation_stereo_vectors.py; foundation_stereo_vectors.json there says how)
FOUNDATION_STEREO_DATA = Path(__file__).resolve().parent / "models" / "data"
CHESSBOARD = BoardSpec(kind="chessboard", cols=9, rows=6, square_m=0.03)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def foundation_stereo_release(base: Path, vit: str = "vits") -> Path:
    """labeler's deterministic FoundationStereo release for `vit` (random-like weights, the official
    layout: labeler.testing.foundation_stereo_release) in `base`/foundation-stereo-`vit`, written on first
    use; returns its model_best_bp2.pth. Tests pass the session's base temp folder: one copy per session."""
    from labeler.testing.foundation_stereo_release import cached_release

    return cached_release(vit, base / f"foundation-stereo-{vit}")


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

    return [
        write_png(folder / f"{prefix}_{i:03d}.png", np.hstack(v)) and folder / f"{prefix}_{i:03d}.png"
        for i, v in enumerate(views)
    ]


@pytest.fixture(scope="session")
def board_dir(tmp_path_factory, board_views) -> Path:
    folder = tmp_path_factory.mktemp("boards")
    write_side_by_side(folder, board_views)
    return folder


@pytest.fixture(scope="session")
def calibrated(board_dir):
    """(CalibrationResult, calib YAML path) for the synthetic rig."""
    from labeler.rig.calibration import calibrate, save_calibration

    result = calibrate(board_dir, rig="test-rig", board=CHESSBOARD)
    path = board_dir.parent / "test-rig.yaml"
    save_calibration(result.calibration, path)
    return result, path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo rig's scene captures (no boards) with truth."""
    from labeler.synthetic.demo import write_demo

    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder, n_boards=0, n_scenes=2, seed=0)
    return folder


# The moving demo sequence labelled with --track (tests/pipelines/test_tracks.py, the exports, diff): small
# frames, a still stretch of STILL frames (8..11 repeat frame 7), 6 samples a shard.
TRACK_W, TRACK_H, TRACK_FRAMES, TRACK_STILL = 320, 240, 16, 4


def run_tracked(root: Path, out: str = "ds", **kw):
    """`labeler run ROOT/demo/sequence --track` into ROOT/OUT (keyword arguments: PseudoLabelConfig's)."""
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label

    cfg = dict(rectify=True, stride=1, track=True, scheduler="sync", progress=False, samples_per_shard=6)
    cfg.update(kw)
    return run_pseudo_label(
        PseudoLabelConfig(inputs=root / "demo" / "sequence", calib=root / "calib.yaml", out=root / out, **cfg)
    )


@pytest.fixture(scope="session")
def tracked_sequence(tmp_path_factory):
    """(root, the sequence's truth, the run's result): ROOT/demo (the rendered sequence), ROOT/calib.yaml and
    ROOT/ds, the tracked dataset. Read it, or copy it before changing it."""
    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence

    root = tmp_path_factory.mktemp("tracked")
    f = 0.78 * TRACK_W
    rig = SyntheticRig.rectified(TRACK_W, TRACK_H, focal_px=f)
    truth = write_demo_sequence(root / "demo", rig, n_frames=TRACK_FRAMES, still_frames=TRACK_STILL)
    identity_calibration_yaml(root / "calib.yaml", TRACK_W, TRACK_H, fx=f)
    return root, truth, run_tracked(root)


def identity_calibration_yaml(
    path: Path, width: int, height: int, *, fx: float = 300.0, baseline_m: float = 0.1
) -> Path:
    """A calibration whose rectification is the identity (already-rectified pairs)."""
    import yaml

    k = [[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]]
    eye = {"K": k, "dist": [0.0] * 5}
    p1 = [[fx, 0.0, width / 2, 0.0], [0.0, fx, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]]
    p2 = [[fx, 0.0, width / 2, -fx * baseline_m], [0.0, fx, height / 2, 0.0], [0.0, 0.0, 1.0, 0.0]]
    i3 = np.eye(3).tolist()
    q = [[1, 0, 0, -width / 2], [0, 1, 0, -height / 2], [0, 0, 0, fx], [0, 0, 1 / baseline_m, 0]]
    data = {
        "schema_version": 1,
        "rig": "identity",
        "image_size": [width, height],
        "left": eye,
        "right": eye,
        "R": i3,
        "T": [-baseline_m, 0.0, 0.0],
        "baseline_m": baseline_m,
        "rms_reprojection_px": 0.0,
        "rectification": {"R1": i3, "R2": i3, "P1": p1, "P2": p2, "Q": q},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def write_plane_pairs(
    folder: Path, n: int, width: int = 128, height: int = 96, *, seed: int = 0, suffix_layout: bool = False
) -> Path:
    """n rectified pairs of `labeler.testing.scenes.box_pair` as PNGs: left/ and right/ folders, or
    `pair_NNN_left.png` / `pair_NNN_right.png` side by side in `folder` (`suffix_layout`)."""
    from labeler.io import write_png
    from labeler.testing.scenes import box_pair

    rng = np.random.default_rng(seed)
    for i in range(n):
        pair = box_pair(rng, width, height)
        left, right = pair.left, pair.right
        if suffix_layout:
            write_png(folder / f"pair_{i:03d}_left.png", left)
            write_png(folder / f"pair_{i:03d}_right.png", right)
        else:
            write_png(folder / "left" / f"pair_{i:03d}.png", left)
            write_png(folder / "right" / f"pair_{i:03d}.png", right)
    return folder


@contextmanager
def layer_output_dtypes() -> Iterator[list]:
    """The dtypes of every Linear / convolution output computed within (any module, any model): what
    tells a body that ran under autocast (bfloat16 matmuls) from one that did not (float32 only)."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d)
    seen: list = []

    def hook(module, args, out):
        if isinstance(module, kinds) and isinstance(out, torch.Tensor):
            seen.append(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def kill_after_first_shard(cmd: list[str], out: Path, timeout_s: float = 120) -> tuple[int, int]:
    """Start `cmd` (a labelling run into `out`) in its own process group and kill -9 the group once its
    first shard is committed (a line in OUT/shards.jsonl). Returns (return code, shards committed)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    index = out / "shards.jsonl"
    deadline = time.time() + timeout_s
    while not (index.exists() and index.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode, len(index.read_text().splitlines()) if index.exists() else 0
