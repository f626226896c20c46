"""The `labeler` command line: parse flags -> validated config -> one call -> print.

Nothing heavy is imported here: torch, sam2, dask and zarr load inside the commands that use them,
so `labeler --help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from labeler.errors import LabelerError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Arducam stereo captures -> pseudo-label datasets (metric depth + instance masks).")
export_app = typer.Typer(no_args_is_help=True, help="Export calibrations and datasets to other formats.")
app.add_typer(export_app, name="export")

T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run(build: Callable[[], Any], call: Callable[[Any], T]) -> T:
    """Build the config (a bad field exits 2, one line per field), then call (a LabelerError exits 1)."""
    try:
        cfg = build()
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "config"
            typer.echo(f"error: --{field.replace('_', '-')}: {e['msg']}", err=True)
        raise typer.Exit(2) from None
    try:
        return call(cfg)
    except LabelerError as err:
        _fail(str(err), 1)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)


LayoutOpt = Annotated[str, typer.Option(help="capture layout: auto|side-by-side|pairs|suffix|video")]
StrideOpt = Annotated[int, typer.Option(help="video input: use every Nth frame")]


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="folder for the synthetic captures")],
    n_boards: Annotated[int, typer.Option(help="board captures to render")] = 14,
    n_scenes: Annotated[int, typer.Option(help="scene captures to render")] = 4,
    seed: int = 0,
) -> None:
    """Render a synthetic Arducam-style rig: board captures, scene captures and their truth."""
    from labeler.configs import DemoConfig
    from labeler.commands import demo_command

    truth = run(lambda: DemoConfig(out=out, n_boards=n_boards, n_scenes=n_scenes, seed=seed), demo_command)
    typer.echo(f"demo rig: {n_boards} board captures in {out / 'boards'}, {len(truth.scenes)} scenes in "
               f"{out / 'scenes'}, truth in {out / 'truth'}")


@app.command()
def calibrate(
    captures: Annotated[Path, typer.Argument(help="board captures: side-by-side frames, left/+right/, or video")],
    rig: Annotated[str, typer.Option(help="rig name; writes calib/<rig>.yaml")],
    board: Annotated[str, typer.Option(help="chessboard|charuco")] = "chessboard",
    cols: Annotated[int, typer.Option(help="chessboard: inner corners per row; charuco: squares per row")] = 9,
    rows: Annotated[int, typer.Option(help="chessboard: inner corners per column; charuco: squares")] = 6,
    square_m: Annotated[float, typer.Option(help="square side, metres")] = 0.03,
    marker_m: Annotated[float | None, typer.Option(help="charuco marker side, metres")] = None,
    dictionary: Annotated[str, typer.Option(help="charuco: cv2.aruco dictionary")] = "DICT_5X5_100",
    layout: LayoutOpt = "auto",
    stride: StrideOpt = 10,
    alpha: Annotated[float, typer.Option(help="stereoRectify scaling: 0 crop to valid pixels, 1 keep all")] = 0.0,
    out: Annotated[Path | None, typer.Option(help="output YAML (default calib/<rig>.yaml)")] = None,
    export: Annotated[list[str] | None, typer.Option(help="also write: ros (camera_info YAML per eye)")] = None,
) -> None:
    """Stereo calibration from board captures -> calib/<rig>.yaml + report."""
    from data_schema.calibration import BoardSpec
    from labeler.commands import calibrate_command
    from labeler.configs import CalibrateConfig

    def build() -> CalibrateConfig:
        spec = BoardSpec(kind=board, cols=cols, rows=rows, square_m=square_m,
                         marker_m=marker_m if board == "charuco" else None,
                         dictionary=dictionary if board == "charuco" else None)
        return CalibrateConfig(captures=captures, rig=rig, board=spec, layout=layout, stride=stride,
                               alpha=alpha, out=out, export=tuple(export or ()))

    res = run(build, calibrate_command)
    c = res.calibration
    for line in res.dropped:
        typer.echo(f"dropped {line}")
    typer.echo(f"{res.path}: {c.n_views} views, RMS {c.rms_reprojection_px:.3f} px, baseline "
               f"{c.baseline_m * 1000:.2f} mm, fx {c.left.K[0][0]:.1f}/{c.right.K[0][0]:.1f} px; "
               f"report in {res.report_dir}")
    for p in res.exported:
        typer.echo(f"ROS camera_info: {p}")


@app.command()
def rectify(
    captures: Annotated[Path, typer.Argument(help="raw captures (any layout, or a video)")],
    calib: Annotated[Path, typer.Option(help="calib/<rig>.yaml")],
    out: Annotated[Path, typer.Option(help="output folder: left/, right/, pairs.json")],
    layout: LayoutOpt = "auto",
    stride: StrideOpt = 10,
) -> None:
    """Rectify raw pairs with a calibration; measures the remaining vertical offset per pair."""
    from labeler.commands import rectify_command
    from labeler.configs import RectifyConfig

    res = run(lambda: RectifyConfig(captures=captures, calib=calib, out=out, layout=layout, stride=stride),
              rectify_command)
    ok = [p for p in res.pairs if p.status == "ok"]
    for p in res.pairs:
        if p.status == "failed":
            typer.echo(f"failed {p.pair_id}: {p.error}")
    offsets = [p.vertical_offset_px for p in ok if p.vertical_offset_px is not None]
    worst = f", worst median vertical offset {max(offsets):.2f} px" if offsets else ""
    typer.echo(f"{out}: {len(ok)} of {len(res.pairs)} pairs rectified{worst}; records in {out / 'pairs.json'}")


@export_app.command("ros")
def export_ros_cmd(
    calib: Annotated[Path, typer.Argument(help="calib/<rig>.yaml")],
    out: Annotated[Path, typer.Option(help="folder for the camera_info YAML files")] = Path("."),
) -> None:
    """Write ROS camera_info YAML for each eye of a calibration."""
    from labeler.calibration import load_calibration
    from labeler.calibration_report import export_ros

    for p in run(lambda: calib, lambda c: export_ros(load_calibration(c), out)):
        typer.echo(f"ROS camera_info: {p}")


if __name__ == "__main__":
    app()
