"""Issue 12: rewriting a finished shard (a retried failure joining it, its other samples carried over) is
all-or-nothing against kill -9: labeler/dataset/journal.py keeps the committed files until the rewrite
commits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labeler import open_dataset
from labeler.dataset import journal, shards
from labeler.dataset.validate import validate_dataset
from tests.conftest import identity_calibration_yaml, write_plane_pairs

# In a subprocess: label as the CLI does, but die by SIGKILL once shard 0's rewrite has replaced the files
# of its first two arrays (the others still hold the committed shard).
_KILL_MID_REWRITE = """
import os, signal, sys
from labeler.dataset import shards
real = shards.write_shard
def dying(dataset, shard, layout, rows):
    if shard == 0 and (shards.journal_path(dataset) / "0").is_dir():
        real(dataset, shard, layout.model_copy(update={"arrays": layout.arrays[:2]}), rows)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(dataset, shard, layout, rows)
shards.write_shard = dying
from labeler.cli.main import app
sys.argv = ["labeler", *sys.argv[1:]]
app()
"""


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, Path]:
    """Four 96x64 pairs (left/ right/) and their calibration."""
    root = tmp_path_factory.mktemp("journal")
    write_plane_pairs(root / "rect", 4, 96, 64, seed=3)
    return root / "rect", identity_calibration_yaml(root / "calib.yaml", 96, 64)


def _reference_version(rect: Path, calib: Path, out: Path) -> str:
    """The version of the same folder labelled in one go (sample records name their source files)."""
    assert _label(rect, calib, out).returncode == 0
    return open_dataset(out).version


def _label(rect: Path, calib: Path, out: Path, *extra: str, script: str | None = None):
    args = ["pseudo-label", str(rect), "--calib", str(calib), "--out", str(out), "--scheduler", "sync"]
    args += ["--samples-per-shard", "2", "--no-previews", *extra]
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "labeler.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_a_killed_rewrite_is_rolled_back_and_redone(pairs, tmp_path):
    rect_ok, calib = pairs
    rect = tmp_path / "rect"
    shutil.copytree(rect_ok, rect)
    left = rect / "left" / "pair_000.png"
    left.write_bytes(left.read_bytes()[:100])  # a truncated capture: pair_000 fails, pair_001 is labelled
    out = tmp_path / "ds"
    assert _label(rect, calib, out).returncode == 0
    before = open_dataset(out)
    assert (before.manifest.counts.ok, before.manifest.counts.failed) == (3, 1)
    committed = shards.shard_file_sizes(out, 0)

    shutil.copy(rect_ok / "left" / "pair_000.png", left)  # fixed: --retry-failed rewrites shard 0
    killed = _label(rect, calib, out, "--retry-failed", script=_KILL_MID_REWRITE)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert shards.shard_file_sizes(out, 0) != committed  # the kill left shard 0 half rewritten ...
    problems = validate_dataset(out)
    assert any("shard 0: a rewrite was cut short by a killed process" in p for p in problems), problems

    # ... which the next writer rolls back first: the committed shard exactly, pair_001 kept
    assert journal.recover(out) == [0]
    assert shards.shard_file_sizes(out, 0) == committed
    assert validate_dataset(out) == []
    assert open_dataset(out).version == before.version

    again = _label(rect, calib, out, "--retry-failed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert validate_dataset(out) == [] and not shards.journal_path(out).joinpath("0").exists()
    after = open_dataset(out)
    assert after.manifest.counts.ok == 4
    assert after.version == _reference_version(rect, calib, tmp_path / "ref")  # as if never killed


def test_the_next_run_rolls_back_by_itself(pairs, tmp_path):
    """Without calling journal.recover: the re-run finds the journal under the lock and says so."""
    rect_ok, calib = pairs
    rect = tmp_path / "rect"
    shutil.copytree(rect_ok, rect)
    left = rect / "left" / "pair_001.png"
    left.write_bytes(left.read_bytes()[:100])
    out = tmp_path / "ds"
    assert _label(rect, calib, out).returncode == 0
    shutil.copy(rect_ok / "left" / "pair_001.png", left)
    assert _label(rect, calib, out, "--retry-failed", script=_KILL_MID_REWRITE).returncode == -9
    again = _label(rect, calib, out, "--retry-failed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "rolled back the interrupted rewrite of shard(s) 0" in again.stderr
    assert validate_dataset(out) == []
    assert open_dataset(out).version == _reference_version(rect, calib, tmp_path / "ref")
