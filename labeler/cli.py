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
    for noisy in ("distributed", "tornado", "bokeh", "asyncio"):  # cluster chatter is not the user's news
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


LayoutOpt = Annotated[str, typer.Option(help="capture layout: auto|side-by-side|pairs|suffix|video")]
StrideOpt = Annotated[int, typer.Option(help="video input: use every Nth frame")]


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="folder for the synthetic captures")],
    n_boards: Annotated[int, typer.Option(help="board captures to render")] = 14,
    n_scenes: Annotated[int, typer.Option(help="scene captures to render")] = 4,
    seed: int = 0,
    middlebury: Annotated[bool, typer.Option(help="also write the real Middlebury Motorcycle pair")] = True,
) -> None:
    """Render a synthetic Arducam-style rig (board captures, scenes, truth); add the Middlebury pair."""
    from labeler.configs import DemoConfig
    from labeler.commands import demo_command

    truth = run(lambda: DemoConfig(out=out, n_boards=n_boards, n_scenes=n_scenes, seed=seed,
                                   middlebury=middlebury), demo_command)
    typer.echo(f"demo rig: {n_boards} board captures in {out / 'boards'}, {len(truth.scenes)} scenes in "
               f"{out / 'scenes'}, truth in {out / 'truth'}"
               + (f"; Middlebury Motorcycle pair in {out / 'middlebury'}" if middlebury else ""))


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


# ------------------------------------------------------------------------------------- pseudo-labels

StereoOpt = Annotated[str, typer.Option(help="stereo backend: sgbm (CPU) | foundation-stereo")]
MasksOpt = Annotated[str, typer.Option(help="mask backend: classical (CPU) | sam2")]
OptPath = Annotated[Path | None, typer.Option()]
OptInt = Annotated[int | None, typer.Option()]
OptFloat = Annotated[float | None, typer.Option()]


def _backend_configs(stereo: str, masks: str, flags: dict[str, Any]):
    """Backend configs from the flags the user gave; unset flags keep the backends' (official) defaults."""
    from pydantic import TypeAdapter

    from data_schema.backends import MaskConfig, StereoConfig

    def given(prefix: str, names: tuple[str, ...], rename: dict[str, str] | None = None) -> dict[str, Any]:
        rename = rename or {}
        return {rename.get(n, n.removeprefix(prefix)): flags[n] for n in names if flags.get(n) is not None}

    stereo_fields = given("", ("valid_iters", "scale", "hiera", "max_disp"), {}) if stereo == "foundation-stereo" else {}
    if stereo == "foundation-stereo" and flags.get("stereo_weights") is not None:
        stereo_fields["weights"] = flags["stereo_weights"]
    sam2_names = tuple(n for n in flags if n.startswith("sam2_"))
    mask_fields = given("sam2_", sam2_names) if masks == "sam2" else {}
    return (TypeAdapter(StereoConfig).validate_python({"name": stereo, **stereo_fields}),
            TypeAdapter(MaskConfig).validate_python({"name": masks, **mask_fields}))


def _label(inputs: Path, *, rectify: bool, calib: Path, out: Path, stereo: str, masks: str, gpu: str | None,
           flags: dict[str, Any], **common: Any) -> None:
    from labeler.configs import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label

    def build() -> PseudoLabelConfig:
        stereo_cfg, mask_cfg = _backend_configs(stereo, masks, flags)
        gpus = tuple(int(g) for g in gpu.split(",")) if gpu else ()
        return PseudoLabelConfig(inputs=inputs, rectify=rectify, calib=calib, out=out, stereo=stereo_cfg,
                                 masks=mask_cfg, gpus=gpus, **common)

    m = run(build, run_pseudo_label)
    for s in m.failures:
        typer.echo(f"failed {s.sample_id}: {s.error}")
    typer.echo(f"{out}: {len(m.ok)} samples ok, {len(m.failures)} failed; dataset {m.dataset_version[:12]}; "
               f"previews in {out / 'previews'}, gallery {out / 'index.html'}")


def _label_command(rectify: bool):
    def command(
        inputs: Annotated[Path, typer.Argument(help="raw captures (run) or a rectified folder (pseudo-label)")],
        calib: Annotated[Path, typer.Option(help="calib/<rig>.yaml")],
        out: Annotated[Path, typer.Option(help="dataset folder")],
        stereo: StereoOpt = "sgbm",
        masks: MasksOpt = "classical",
        gpu: Annotated[str | None, typer.Option(help="CUDA ids, e.g. 0 or 0,1 (one worker per GPU)")] = None,
        workers: Annotated[int | None, typer.Option(help="CPU workers (default: cores)")] = None,
        scheduler: Annotated[str | None, typer.Option(help="tcp://host:port of a running Dask scheduler, "
                                                       "or threads | sync")] = None,
        z_far_m: Annotated[float, typer.Option(help="depth beyond this is invalid, m")] = 20.0,
        samples_per_shard: Annotated[int, typer.Option(help="samples per Zarr shard file")] = 32,
        retry_failed: Annotated[bool, typer.Option(help="redo samples that failed before")] = False,
        previews: Annotated[bool, typer.Option(help="write a PNG preview per sample")] = True,
        layout: LayoutOpt = "auto",
        stride: StrideOpt = 10,
        stereo_weights: Annotated[Path | None, typer.Option(help="foundation-stereo: model_best_bp2.pth")] = None,
        valid_iters: Annotated[int | None, typer.Option(help="foundation-stereo: GRU iterations")] = None,
        scale: Annotated[float | None, typer.Option(help="foundation-stereo: image scale")] = None,
        hiera: Annotated[bool | None, typer.Option(help="foundation-stereo: coarse-to-fine")] = None,
        max_disp: Annotated[int | None, typer.Option(help="foundation-stereo: max disparity")] = None,
        sam2_checkpoint: Annotated[Path | None, typer.Option(help="sam2: local checkpoint .pt")] = None,
        sam2_config: Annotated[str | None, typer.Option(help="sam2: sam2.1_hiera_t|s|b+|l or YAML")] = None,
        sam2_points_per_side: OptInt = None,
        sam2_points_per_batch: OptInt = None,
        sam2_pred_iou_thresh: OptFloat = None,
        sam2_stability_score_thresh: OptFloat = None,
        sam2_box_nms_thresh: OptFloat = None,
        sam2_min_mask_region_area: OptInt = None,
        sam2_crop_n_layers: OptInt = None,
    ) -> None:
        flags = {k: v for k, v in locals().items() if k.startswith(("sam2_",)) or k in (
            "stereo_weights", "valid_iters", "scale", "hiera", "max_disp")}
        _label(inputs, rectify=rectify, calib=calib, out=out, stereo=stereo, masks=masks, gpu=gpu, flags=flags,
               workers=workers, scheduler=scheduler, z_far_m=z_far_m, samples_per_shard=samples_per_shard,
               retry_failed=retry_failed, previews=previews, layout=layout, stride=stride)

    return command


app.command("pseudo-label", help="Rectified pairs -> disparity, metric depth, masks, per-object depth -> "
            "Zarr v3 shards + manifest.")(_label_command(rectify=False))
app.command("run", help="The whole DAG from raw captures: rectify -> pseudo-label (same flags).")(
    _label_command(rectify=True))


@app.command()
def validate(dataset: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Check a dataset against its manifest; one line per problem, exit 1 on any damage."""
    from labeler.validate import validate_dataset

    problems = run(lambda: dataset, validate_dataset)
    for line in problems:
        typer.echo(line)
    if problems:
        _fail(f"{dataset}: {len(problems)} problem(s)", 1)
    typer.echo(f"{dataset}: valid")


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
