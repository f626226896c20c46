"""The labelling commands: demo, calibrate, rectify, pseudo-label / run, validate, migrate, repair, export
ros / coco. Parse flags -> validated config -> one call -> print.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from data_schema.calibration import BoardKind
from data_schema.commands import CalibExport, PseudoLabelConfig
from data_schema.manifest import Manifest, ObjectPolicy, TrackingConfig
from labeler.cli._app import (
    KeepDuplicatesOpt,
    LayoutOpt,
    OverwriteOpt,
    SelectionOpt,
    StillThresholdOpt,
    StrictLicenceOpt,
    StrideOpt,
    TrackMaxDepthJumpOpt,
    TrackMaxGapOpt,
    TrackMinIouOpt,
    _fail,
    _gpus,
    app,
    export_app,
    licence_line,
    run,
)
from labeler.cli.backends import backend_configs, parameters


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="folder for the synthetic captures")],
    n_boards: Annotated[int, typer.Option(help="board captures to render")] = 14,
    n_scenes: Annotated[int, typer.Option(help="scene captures to render")] = 4,
    seed: Annotated[int, typer.Option(help="random seed of the scenes and poses")] = 0,
    middlebury: Annotated[bool, typer.Option(help="also write the real Middlebury Motorcycle pair")] = True,
    sequence_frames: Annotated[
        int, typer.Option(help="frames of the moving sequence with true ids (sequence/walk.avi); 0: none")
    ] = 32,
) -> None:
    """Render a synthetic Arducam-style rig (board captures, scenes, truth); add the Middlebury pair."""
    from data_schema.commands import DemoConfig
    from labeler.cli.commands import demo_command

    truth = run(
        lambda: DemoConfig(
            out=out,
            n_boards=n_boards,
            n_scenes=n_scenes,
            seed=seed,
            middlebury=middlebury,
            sequence_frames=sequence_frames,
        ),
        demo_command,
    )
    typer.echo(
        f"demo rig: {n_boards} board captures in {out / 'boards'}, {len(truth.scenes)} scenes in "
        f"{out / 'scenes'}, truth in {out / 'truth'}"
        + (f"; a {sequence_frames}-frame moving sequence in {out / 'sequence'}" if sequence_frames else "")
        + (f"; Middlebury Motorcycle pair in {out / 'middlebury'}" if middlebury else "")
    )


@app.command()
def calibrate(
    captures: Annotated[
        Path, typer.Argument(help="board captures: side-by-side frames, left/+right/, or video")
    ],
    rig: Annotated[str, typer.Option(help="rig name; writes calib/<rig>.yaml")],
    board: Annotated[BoardKind, typer.Option(help="calibration target kind")] = "chessboard",
    cols: Annotated[
        int, typer.Option(help="chessboard: inner corners per row; charuco: squares per row")
    ] = 9,
    rows: Annotated[int, typer.Option(help="chessboard: inner corners per column; charuco: squares")] = 6,
    square_m: Annotated[float, typer.Option(help="square side, metres")] = 0.03,
    marker_m: Annotated[float | None, typer.Option(help="charuco marker side, metres")] = None,
    dictionary: Annotated[str, typer.Option(help="charuco: cv2.aruco dictionary")] = "DICT_5X5_100",
    layout: LayoutOpt = "auto",
    stride: StrideOpt = 10,
    alpha: Annotated[
        float, typer.Option(help="stereoRectify scaling: 0 crop to valid pixels, 1 keep all")
    ] = 0.0,
    out: Annotated[Path | None, typer.Option(help="output YAML (default calib/<rig>.yaml)")] = None,
    export: Annotated[
        list[CalibExport] | None, typer.Option(help="also write: ros (camera_info YAML per eye)")
    ] = None,
) -> None:
    """Stereo calibration from board captures -> calib/<rig>.yaml + report."""
    from data_schema.calibration import BoardSpec
    from data_schema.commands import CalibrateConfig
    from labeler.cli.commands import calibrate_command

    def build() -> CalibrateConfig:
        spec = BoardSpec(
            kind=board,
            cols=cols,
            rows=rows,
            square_m=square_m,
            marker_m=marker_m if board == "charuco" else None,
            dictionary=dictionary if board == "charuco" else None,
        )
        return CalibrateConfig(
            captures=captures,
            rig=rig,
            board=spec,
            layout=layout,
            stride=stride,
            alpha=alpha,
            out=out,
            export=tuple(export or ()),
        )

    res = run(build, calibrate_command)
    c = res.calibration
    for line in res.dropped:
        typer.echo(f"dropped {line}")
    typer.echo(
        f"{res.path}: {c.n_views} views, RMS {c.rms_reprojection_px:.3f} px, baseline "
        f"{c.baseline_m * 1000:.2f} mm, fx {c.left.K[0][0]:.1f}/{c.right.K[0][0]:.1f} px; "
        f"report in {res.report_dir}"
    )
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
    from data_schema.commands import RectifyConfig
    from labeler.cli.commands import rectify_command

    res = run(
        lambda: RectifyConfig(captures=captures, calib=calib, out=out, layout=layout, stride=stride),
        rectify_command,
    )
    ok = [p for p in res.pairs if p.status == "ok"]
    for p in res.pairs:
        if p.status == "failed":
            typer.echo(f"failed {p.pair_id}: {p.error}")
    offsets = [p.vertical_offset_px for p in ok if p.vertical_offset_px is not None]
    worst = f", worst median vertical offset {max(offsets):.2f} px" if offsets else ""
    typer.echo(
        f"{out}: {len(ok)} of {len(res.pairs)} pairs rectified{worst}; records in {out / 'pairs.json'}"
    )


# ------------------------------------------------------------------------------------- pseudo-labels


def _check_backends(cfg: PseudoLabelConfig) -> PseudoLabelConfig:
    """Each selected backend's own check (e.g. sam2's config and checkpoint files), before any sample."""
    from labeler.segment.base import MASK_BACKENDS
    from labeler.stereo.base import STEREO_BACKENDS

    STEREO_BACKENDS.check(cfg.stereo)
    MASK_BACKENDS.check(cfg.masks)
    return cfg


def _label(
    inputs: Path,
    *,
    rectify: bool,
    calib: Path,
    out: Path,
    gpu: str | None,
    backend: dict[str, Any],
    **common: Any,
) -> None:
    from pipelines.pseudo_label import run_pseudo_label

    def build() -> PseudoLabelConfig:
        stereo_cfg, mask_cfg = backend_configs(backend)
        gpus = _gpus(gpu)
        return PseudoLabelConfig(
            inputs=inputs,
            rectify=rectify,
            calib=calib,
            out=out,
            stereo=stereo_cfg,
            masks=mask_cfg,
            gpus=gpus,
            **common,
        )

    res = run(build, lambda cfg: run_pseudo_label(_check_backends(cfg)))
    for s in res.new_failures:
        typer.echo(f"failed {s.sample_id}: {s.error}")
    if res.n_new_failed > len(res.new_failures):
        typer.echo(f"... and {res.n_new_failed - len(res.new_failures)} more failures (ds.failures)")
    if res.relabelled_changed:
        shown = ", ".join(res.relabelled_changed[:5]) + (" …" if len(res.relabelled_changed) > 5 else "")
        typer.echo(
            f"relabelled {len(res.relabelled_changed)} samples whose rectified images changed since they "
            f"were labelled: {shown}"
        )
    c = res.manifest.counts
    still = f", {c.skipped} still frames skipped ({res.still_skipped} now)" if c.skipped else ""
    tracks = f", {c.tracks} tracks" if res.tracks is not None else ""
    typer.echo(
        f"{out}: {c.ok} samples ok, {c.failed} failed{still}{tracks} ({res.labelled} labelled now, "
        f"{res.skipped} already done); dataset {res.dataset_version[:12]}; previews in {out / 'previews'}, "
        f"gallery {out / 'index.html'}"
    )


_POLICY = ObjectPolicy()  # the flags' defaults are the record's
_TRACKING = TrackingConfig()
_STILL_DN: float = PseudoLabelConfig.model_fields["still_threshold_dn"].default


def _label_command(rectify: bool):
    def command(
        inputs: Annotated[
            Path, typer.Argument(help="raw captures (run) or a rectified folder (pseudo-label)")
        ],
        calib: Annotated[Path, typer.Option(help="calib/<rig>.yaml")],
        out: Annotated[Path, typer.Option(help="dataset folder")],
        gpu: Annotated[str | None, typer.Option(help="CUDA ids, e.g. 0 or 0,1 (one worker per GPU)")] = None,
        workers: Annotated[int | None, typer.Option(help="CPU workers (default: cores)")] = None,
        scheduler: Annotated[
            str | None, typer.Option(help="tcp://host:port of a running Dask scheduler, or threads | sync")
        ] = None,
        z_far_m: Annotated[float, typer.Option(help="depth beyond this is invalid, m")] = 20.0,
        samples_per_shard: Annotated[int, typer.Option(help="samples per Zarr shard file")] = 32,
        batch_size: Annotated[
            int,
            typer.Option(help="samples per backend call: one GPU forward for several (try 4-8 with --gpu)"),
        ] = 1,
        retry_failed: Annotated[bool, typer.Option(help="redo samples that failed before")] = False,
        previews: Annotated[bool, typer.Option(help="write a PNG preview per sample")] = True,
        layout: LayoutOpt = "auto",
        stride: StrideOpt = 10,
        min_object_area_px: Annotated[
            int, typer.Option(help="every backend: smallest object, px (smaller masks are counted, not kept)")
        ] = _POLICY.min_area_px,
        min_object_valid_fraction: Annotated[
            float, typer.Option(help="every backend: least share of an object's pixels with valid depth")
        ] = _POLICY.min_valid_fraction,
        min_depth_px: Annotated[
            int, typer.Option(help="an object's depth needs at least this many valid pixels, else none")
        ] = _POLICY.min_depth_px,
        strict_licence: StrictLicenceOpt = None,
        track: Annotated[
            bool,
            typer.Option(help="link each sequence's objects over its frames: objects.track_id, tracks table"),
        ] = False,
        track_min_iou: TrackMinIouOpt = _TRACKING.min_iou,
        track_max_depth_jump_m: TrackMaxDepthJumpOpt = _TRACKING.max_depth_jump_m,
        track_max_gap_frames: TrackMaxGapOpt = _TRACKING.max_gap_frames,
        keyframe_every: Annotated[
            int,
            typer.Option(
                min=1,
                max=10_000,
                help="--track --masks sam2: automatic masks every N labelled frames; the SAM2 video "
                "predictor carries objects between",
            ),
        ] = _TRACKING.keyframe_every,
        keyframe_min_coverage: Annotated[
            float,
            typer.Option(
                min=0.0,
                max=1.0,
                help="--track --masks sam2: an early keyframe when the propagated masks cover less than this "
                "share of the last keyframe's automatic masks (0: never early)",
            ),
        ] = _TRACKING.min_coverage,
        keep_duplicates: KeepDuplicatesOpt = False,
        still_threshold_dn: StillThresholdOpt = _STILL_DN,
        **backend: Any,  # --stereo, --masks and the backends' own flags: `parameters()` below
    ) -> None:
        _label(
            inputs,
            rectify=rectify,
            calib=calib,
            out=out,
            gpu=gpu,
            backend=backend,
            workers=workers,
            scheduler=scheduler,
            z_far_m=z_far_m,
            samples_per_shard=samples_per_shard,
            batch_size=batch_size,
            retry_failed=retry_failed,
            previews=previews,
            strict_licence=strict_licence,
            layout=layout,
            stride=stride,
            objects={
                "min_area_px": min_object_area_px,
                "min_valid_fraction": min_object_valid_fraction,
                "min_depth_px": min_depth_px,
            },
            track=track,
            tracking={
                "min_iou": track_min_iou,
                "max_depth_jump_m": track_max_depth_jump_m,
                "max_gap_frames": track_max_gap_frames,
                "keyframe_every": keyframe_every,
                "min_coverage": keyframe_min_coverage,
            },
            keep_duplicates=keep_duplicates,
            still_threshold_dn=still_threshold_dn,
        )

    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    # typer reads the options from the signature; typeshed's FunctionType lacks __signature__
    command.__signature__ = signature.replace(parameters=[*fixed, *parameters()])  # type: ignore[attr-defined]
    return command


app.command(
    "pseudo-label",
    help="Rectified pairs -> disparity, metric depth, masks, per-object depth -> Zarr v3 shards + manifest.",
)(_label_command(rectify=False))
app.command("run", help="The whole DAG from raw captures: rectify -> pseudo-label (same flags).")(
    _label_command(rectify=True)
)


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    workers: Annotated[int | None, typer.Option(help="CPU workers (default: cores)")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="tcp://host:port of a running Dask scheduler, or threads | sync")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Check a dataset: every table hash, digest, object statistic and row; one line per problem, exit 1
    on any damage."""
    from pipelines.validate import run_validate

    problems = run(
        lambda: dataset, lambda d: run_validate(d, scheduler=scheduler, workers=workers, progress=progress)
    )
    for line in problems:
        typer.echo(line)
    if problems:
        from labeler.dataset.manifest import has_manifest

        if has_manifest(dataset):  # a damaged dataset still says which models made it
            typer.echo(licence_line(dataset))
        _fail(f"{dataset}: {len(problems)} problem(s)", 1)
    from labeler.review.summary import review_summary

    typer.echo(f"{dataset}: valid; {review_summary(dataset)}")
    typer.echo(licence_line(dataset))


@app.command()
def migrate(
    dataset: Annotated[Path, typer.Argument(help="a v1 dataset folder (converted in place)")],
) -> None:
    """Convert a v1 dataset (one manifest with every sample) to layout v2 (tables + shard index)."""
    from labeler.dataset.migrate import migrate_dataset
    from labeler.review.gallery import write_gallery

    def call(path: Path) -> Manifest:
        manifest = migrate_dataset(path)
        write_gallery(path)  # the gallery's pages follow the new layout
        return manifest

    m = run(lambda: dataset, call)
    typer.echo(
        f"{dataset}: layout v2, {m.counts.ok} samples ok, {m.counts.failed} failed, {m.counts.objects} "
        f"objects in {m.counts.shards} shards; dataset {m.dataset_version[:12]}"
    )


@app.command()
def repair(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    workers: Annotated[int | None, typer.Option(help="CPU workers (default: cores)")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="tcp://host:port of a running Dask scheduler, or threads | sync")
    ] = "sync",
    sources: Annotated[
        Path | None,
        typer.Option(help="where the rectified images moved to (searched by their recorded trailing path)"),
    ] = None,
) -> None:
    """Restore what validation names: rebuild a damaged index, row plan or manifest, rewrite damaged shards
    from their samples' rectified images (journalled); says what it redid and what it could not restore."""
    from pipelines.repair import repair_dataset

    res = run(
        lambda: dataset,
        lambda d: repair_dataset(d, sources=sources, scheduler=scheduler, workers=workers),
    )
    for what in res.rebuilt:
        typer.echo(f"rebuilt {what}")
    for shard, why in sorted(res.not_restored.items()):
        typer.echo(f"not restored: shard {shard}: {why}")
    if not res.repaired:
        typer.echo(f"{dataset}: nothing to repair" if not res.rebuilt else f"{dataset}: records rebuilt")
        if res.not_restored:
            raise typer.Exit(1)
        return
    for shard, problems in sorted(res.repaired.items()):
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        typer.echo(f"repaired shard {shard}: {problems[0]}{more}")
    for s in res.failed:
        typer.echo(f"failed {s.sample_id}: {s.error}")
    version = res.manifest.dataset_version[:12]
    typer.echo(f"{dataset}: {len(res.repaired)} shards rewritten; dataset {version}")


@export_app.command("ros")
def export_ros_cmd(
    calib: Annotated[Path, typer.Argument(help="calib/<rig>.yaml")],
    out: Annotated[Path, typer.Option(help="folder for the camera_info YAML files")] = Path("."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Write ROS camera_info YAML for each eye of a calibration."""
    from labeler.rig.calibration import load_calibration
    from labeler.rig.calibration_report import export_ros

    for p in run(lambda: calib, lambda c: export_ros(load_calibration(c), out, overwrite=overwrite)):
        typer.echo(f"ROS camera_info: {p}")


@export_app.command("coco")
def export_coco_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder")],
    out: Annotated[Path, typer.Option(help="COCO instances JSON to write")],
    images: Annotated[
        Path | None, typer.Option(help="also write the left images here as PNG (file_name points at them)")
    ] = None,
    include_rejected: Annotated[
        bool, typer.Option(help="also export samples and objects a review rejected (default: left out)")
    ] = False,
    selection: SelectionOpt = None,
    strict_licence: StrictLicenceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a dataset's masks as COCO instances JSON (class-agnostic, RLE, depth per annotation)."""
    from labeler.export.coco import ExportScope, export_coco

    scope = ExportScope(include_rejected=include_rejected, selection=selection, strict_licence=strict_licence)
    path = run(
        lambda: dataset, lambda d: export_coco(d, out, images=images, scope=scope, overwrite=overwrite)
    )
    typer.echo(f"COCO instances: {path}")
