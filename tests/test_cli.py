"""The command line: fast start, one-line errors, exit codes, the demo → calibrate → rectify chain."""

from __future__ import annotations

import subprocess
import sys

import yaml
from typer.testing import CliRunner

from labeler.cli import app

HEAVY = ("torch", "sam2", "dask", "distributed", "zarr", "timm")


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom labeler.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage" in out
    assert out.strip().splitlines()[-1] == "HEAVY=", f"--help imported: {out.strip().splitlines()[-1]}"


def test_every_command_has_help():
    runner = CliRunner()
    for cmd in (["calibrate"], ["rectify"], ["demo"], ["export", "ros"]):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0, res.output


def test_bad_flag_value_is_one_line_per_field(tmp_path):
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path), "--rig", "r", "--square-m", "-1"])
    assert res.exit_code == 2
    assert "error: --square-m: Input should be greater than 0" in res.output


def test_missing_captures_exit_1_with_one_line(tmp_path):
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nope"), "--rig", "r"])
    assert res.exit_code == 1
    assert res.output.strip() == f"error: {tmp_path / 'nope'}: no such file or folder; check the capture path"


def test_rectify_with_missing_calibration(tmp_path):
    res = CliRunner().invoke(
        app, ["rectify", str(tmp_path), "--calib", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "calibration file not found" in res.output


def test_calibrate_and_rectify_chain(board_dir, demo_dir, tmp_path, rig):
    out = tmp_path / "calib" / "rig-a.yaml"
    runner = CliRunner()
    res = runner.invoke(
        app, ["calibrate", str(board_dir), "--rig", "rig-a", "--out", str(out), "--export", "ros"]
    )
    assert res.exit_code == 0, res.output
    assert "12 views" in res.output
    calib = yaml.safe_load(out.read_text())
    assert abs(calib["baseline_m"] / rig.baseline_m - 1) < 0.005
    report = tmp_path / "calib" / "rig-a.report"
    assert {p.name for p in report.iterdir()} == {"report.json", "coverage.png", "rectified_preview.png"}
    assert (tmp_path / "calib" / "rig-a_left.camera_info.yaml").is_file()
    res = runner.invoke(
        app, ["rectify", str(demo_dir / "scenes"), "--calib", str(out), "--out", str(tmp_path / "rect")]
    )
    assert res.exit_code == 0, res.output
    assert "2 of 2 pairs rectified" in res.output
    assert (tmp_path / "rect" / "left" / "scene_000.png").is_file()
