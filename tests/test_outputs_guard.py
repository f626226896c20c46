"""Issue 25 item 9 and "outputs never destroy inputs": one `rectify` per --out at a time (pairs.json lists
every pair), --out inside or equal to the input refused; an export's --out that exists is replaced only
when it is the export's own earlier output and --overwrite is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeler.cli.main import app


def _cli(*args: object):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit | None), res.output
    return res


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    root = tmp_path_factory.mktemp("guard")
    write_plane_pairs(root / "raw", 12, 96, 64, seed=5)
    return root / "raw", identity_calibration_yaml(root / "calib.yaml", 96, 64)


def test_rectify_out_equal_to_or_inside_the_captures_is_refused(raw, tmp_path):
    captures, calib = raw
    copy = tmp_path / "raw"
    shutil.copytree(captures, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    for out in (copy, copy / "rect", copy / "left" / "x"):
        res = _cli("rectify", copy, "--calib", calib, "--out", out)
        assert res.exit_code == 1 and "lies inside, the captures folder" in res.output, res.output
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


def test_a_second_rectify_on_the_same_out_is_refused_while_the_first_runs(raw, tmp_path):
    from labeler.io import folder_lock
    from labeler.rig.rectify import LOCK_NAME

    captures, calib = raw
    out = tmp_path / "rect"
    with folder_lock(out, LOCK_NAME, what="this rectified folder"):  # as a running rectify holds it
        res = _cli("rectify", captures, "--calib", calib, "--out", out)
    assert res.exit_code == 1 and "another labeler process is writing this rectified folder" in res.output
    assert not (out / "pairs.json").exists()


def test_two_rectify_processes_at_once_leave_every_pair_listed(raw, tmp_path):
    captures, calib = raw
    out = tmp_path / "rect"
    cmd = [sys.executable, "-m", "labeler.cli", "rectify", str(captures), "--calib", str(calib)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    for rc, err in results:
        assert "Traceback" not in err and (rc == 0 or "another labeler process" in err), err
    assert any(rc == 0 for rc, _ in results)
    pairs = json.loads((out / "pairs.json").read_text())["pairs"]
    assert len(pairs) == 12 and all(p["status"] == "ok" for p in pairs)
    for p in pairs:
        assert (out / p["left_path"]).is_file() and (out / p["right_path"]).is_file()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.train.conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize(
    ("kind", "name"),
    [("coco", "out.json"), ("rerun", "out.rrd"), ("hf", "hf"), ("webdataset", "wds"), ("lerobot", "lerobot")],
)
def test_an_export_replaces_only_its_own_output_and_only_with_overwrite(tiny, tmp_path, kind, name):
    out = tmp_path / name
    assert _cli("export", kind, tiny, "--out", out).exit_code == 0
    first = out.stat().st_mtime_ns
    res = _cli("export", kind, tiny, "--out", out)
    assert res.exit_code == 1 and "pass --overwrite to replace it" in res.output, res.output
    assert out.stat().st_mtime_ns == first
    assert _cli("export", kind, tiny, "--out", out, "--overwrite").exit_code == 0
    other = tmp_path / ("other" + Path(name).suffix)
    folder = kind in ("hf", "webdataset", "lerobot")
    if folder:
        other.mkdir()
        (other / "notes.txt").write_text("mine")
    else:
        other.write_text("not an export of this project")
    res = _cli("export", kind, tiny, "--out", other, "--overwrite")
    assert res.exit_code == 1 and "exists and is not an earlier" in res.output, res.output
    assert (other / "notes.txt").read_text() == "mine" if folder else other.read_text().startswith("not")
    inside = tiny / ("x" + Path(name).suffix)
    res = _cli("export", kind, tiny, "--out", inside)
    assert res.exit_code == 1 and "lies inside the dataset" in res.output and not inside.exists()


def test_export_ros_replaces_its_files_only_with_overwrite(tiny, tmp_path):
    calib = tiny.parent / "calib.yaml"
    assert _cli("export", "ros", calib, "--out", tmp_path).exit_code == 0
    files = sorted(tmp_path.glob("*.camera_info.yaml"))
    assert len(files) == 2
    files[0].write_text("edited by hand")
    res = _cli("export", "ros", calib, "--out", tmp_path)
    assert res.exit_code == 1 and "pass --overwrite" in res.output
    assert files[0].read_text() == "edited by hand"
    assert _cli("export", "ros", calib, "--out", tmp_path, "--overwrite").exit_code == 0
    assert files[0].read_text() != "edited by hand"
