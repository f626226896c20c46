"""Issue 12: a read-only --out and a full disk are one line each, never a traceback, and leave a dataset
that validates and resumes once the disk is writable again.

Real file systems, not mocks: a small tmpfs mounted read-only or filled up (root only; elsewhere these
tests skip with one line).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labeler import open_dataset
from labeler.dataset.validate import validate_dataset
from tests.conftest import identity_calibration_yaml, write_plane_pairs


def _mount(args: list[str]) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path, request) -> Iterator[Path]:
    """A small tmpfs at tmp_path/disk (160 KiB, or the test's `size` parameter; remount it with `_mount`),
    unmounted afterwards."""
    size = getattr(request, "param", "160k")
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (read-only and full-disk tests)")
    try:
        _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)])
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, Path]:
    """Four 320x240 rectified pairs (~0.5 MB of arrays: more than the tmpfs holds) and their calibration."""
    root = tmp_path_factory.mktemp("disk-pairs")
    write_plane_pairs(root / "rect", 4, 320, 240, seed=4)
    return root / "rect", identity_calibration_yaml(root / "calib.yaml", 320, 240)


def _label(pairs: tuple[Path, Path], out: Path) -> subprocess.CompletedProcess[str]:
    rect, calib = pairs
    cmd = [sys.executable, "-m", "labeler.cli", "pseudo-label", str(rect), "--calib", str(calib)]
    cmd += ["--out", str(out), "--scheduler", "sync", "--samples-per-shard", "2"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    # what the run said, without the progress bar's redraws
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("pseudo-label: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_a_read_only_out_is_one_line(pairs, tmpfs):
    _mount(["-o", "remount,ro", str(tmpfs)])
    line = _one_error_line(_label(pairs, tmpfs / "ds"))
    assert f"{tmpfs / 'ds'}: cannot write here (Read-only file system)" in line
    assert "pass a writable --out" in line


# 16 KiB fills up while the store is created (zarr's own writes), 160 KiB while shard 0 is written
@pytest.mark.parametrize("tmpfs", ["16k", "160k"], indirect=True)
def test_a_full_disk_is_one_line_and_the_dataset_resumes(pairs, tmpfs, tmp_path):
    out = tmpfs / "ds"
    line = _one_error_line(_label(pairs, out))
    assert "No space left on device" in line and str(out) in line
    assert "free space on that disk, then run the command again" in line
    # what the run left is a valid dataset of the shards it finished (or no dataset yet) ...
    if (out / "manifest.json").exists():
        assert validate_dataset(out) == []
    # ... and, with space again, the same command finishes it: every sample once, as on a roomy disk
    _mount(["-o", "remount,size=64m", str(tmpfs)])
    res = _label(pairs, out)
    assert res.returncode == 0, res.stderr
    assert validate_dataset(out) == []
    roomy = tmp_path / "roomy"
    assert _label(pairs, roomy).returncode == 0
    a, b = open_dataset(out), open_dataset(roomy)
    assert a.manifest.counts.ok == b.manifest.counts.ok == 4
    assert a.manifest.dataset_version == b.manifest.dataset_version
    # and a read-only dataset still validates (validate writes nothing)
    _mount(["-o", "remount,ro", str(tmpfs)])
    assert validate_dataset(out) == []
