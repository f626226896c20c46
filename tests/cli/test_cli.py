"""The command line: fast start, one-line errors, exit codes, the demo → calibrate → rectify chain."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
import yaml
from typer.testing import CliRunner

from labeler.cli.main import app

HEAVY = ("torch", "sam2", "dask", "distributed", "zarr", "timm")


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom labeler.cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage" in out
    assert out.strip().splitlines()[-1] == "HEAVY=", f"--help imported: {out.strip().splitlines()[-1]}"


def _commands(group, path=()):
    """Every command and subcommand of the CLI, as (argv path, click command)."""
    yield path, group
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _commands(cmd, (*path, name))


def test_python_m_labeler_cli_has_every_command():
    """torchrun starts `python -m labeler.cli`: that entry point knows every command the `labeler` one does
    (commands registered from other modules included: train-heads, review, ...)."""
    names = set(typer.main.get_command(app).commands)
    out = subprocess.run(
        [sys.executable, "-m", "labeler.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    listed = set(re.findall(r"^│ ([a-z][a-z0-9-]+) ", out, re.M))
    assert {"train-heads", "finetune", "predict", "review", "train-stereo", "adapt-backbone"} <= names
    assert listed == names


def test_every_command_answers_help_and_every_flag_has_help():
    tree = dict(_commands(typer.main.get_command(app)))
    assert {("export", "ros"), ("export", "coco"), ("pseudo-label",), ("train-heads",)} <= set(tree)
    runner = CliRunner()
    for path, cmd in tree.items():
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output
        undocumented = [p.name for p in cmd.params if not (p.help or "").strip()]
        assert not undocumented, f"labeler {' '.join(path)}: no help for {undocumented}"


# flags with a fixed set of values show it instead of <str>; values from the configs' literals / registries
CHOICES = [
    (["calibrate"], "--board", "<chessboard|charuco>"),
    (["calibrate"], "--layout", "<auto|side-by-side|pairs|suffix|video>"),
    (["calibrate"], "--export", "<list[ros]>"),
    (["rectify"], "--layout", "<auto|side-by-side|pairs|suffix|video>"),
    (["pseudo-label"], "--stereo", "<sgbm|foundation-stereo>"),
    (["run"], "--masks", "<classical|sam2|sam3>"),
    (["train-heads"], "--backbone", "<vits|vitb|vitl|vitg|tiny>"),
    (["train-heads"], "--task", "<depth|seg|fusion>"),
    (["train-heads"], "--depth-loss", "<silog|l1>"),
    (["train-heads"], "--seg-loss", "<bce|focal>"),
    (["predict"], "--layout", "<auto|mono|side-by-side|pairs>"),
    (["predict"], "--checkpoint", "<last|best>"),
]


@pytest.mark.parametrize(("cmd", "flag", "choices"), CHOICES)
def test_help_shows_choices(cmd, flag, choices):
    out = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"}).output
    (line,) = [ln for ln in out.splitlines() if re.match(rf"│\s+(\*\s+)?{flag}\s", ln)]
    assert choices in line


def test_backend_choices_are_the_registered_backends():
    import labeler.segment.base as segment
    import labeler.stereo.base as stereo
    from data_schema.backends import MaskConfig, StereoConfig, backend_name, config_classes

    assert stereo.STEREO_BACKENDS.names() == sorted(backend_name(c) for c in config_classes(StereoConfig))
    assert segment.MASK_BACKENDS.names() == sorted(backend_name(c) for c in config_classes(MaskConfig))


def test_backend_flags_take_type_default_and_help_from_the_config():
    from data_schema.backends import FoundationStereoConfig

    cmd = typer.main.get_command(app).commands["pseudo-label"]
    opt = {p.name: p for p in cmd.params}
    field = FoundationStereoConfig.model_fields["valid_iters"]
    assert opt["valid_iters"].help == field.description == "GRU refinement iterations"
    assert opt["valid_iters"].show_default == "32"
    assert opt["valid_iters"].default is None  # not given: the config keeps its own default
    assert opt["hiera"].opts == ["--hiera"] and opt["hiera"].secondary_opts == ["--no-hiera"]
    # every flag spelled as before the flags were generated (they are a contract)
    spelled = {o for p in cmd.params for o in p.opts}
    assert {
        "--stereo-weights", "--valid-iters", "--scale", "--hiera", "--max-disp", "--sam2-checkpoint",
        "--sam2-config", "--sam2-points-per-side", "--sam2-points-per-batch", "--sam2-pred-iou-thresh",
        "--sam2-stability-score-thresh", "--sam2-box-nms-thresh", "--sam2-min-mask-region-area",
        "--sam2-crop-n-layers",
    } <= spelled  # fmt: skip


def test_given_backend_flags_reach_the_config():
    from data_schema.backends import FoundationStereoConfig, Sam2Config
    from labeler.cli.backends import backend_configs

    values = {"stereo": "foundation-stereo", "masks": "sam2", "valid_iters": 4, "hiera": True}
    values |= {"sam2_points_per_side": 8, "scale": None}
    stereo, masks = backend_configs(values)
    assert stereo == FoundationStereoConfig(valid_iters=4, hiera=True)
    assert masks == Sam2Config(points_per_side=8)


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ["--valid-iters", "4"],
            "error: --valid-iters belongs to --stereo foundation-stereo (selected: sgbm)",
        ),
        (
            ["--sam2-points-per-side", "8", "--masks", "classical"],
            "error: --sam2-points-per-side belongs to --masks sam2 (selected: classical)",
        ),
        (["--no-hiera"], "error: --hiera/--no-hiera belongs to --stereo foundation-stereo (selected: sgbm)"),
        (
            ["--stereo", "foundation-stereo", "--valid-iters", "0"],
            "error: --valid-iters: Input should be greater than or equal to 1",
        ),
    ],
)
def test_foreign_or_bad_backend_flag_is_refused_in_one_line(tmp_path, flags, line):
    args = ["pseudo-label", str(tmp_path), "--calib", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, [*args, *flags])
    assert res.exit_code == 2
    assert res.output.strip() == line
    assert not (tmp_path / "o").exists()


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
