"""`labeler train-heads`, `labeler finetune` and `labeler predict`: the DINOv2 heads' commands.

Registered on the app of labeler/cli/_app.py; like the rest of the command line, nothing heavy is
imported until a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from data_schema.commands import CheckpointName, DepthLoss, PredictConfig, PredictLayout, SegLoss
from data_schema.heads import Backbone, HeadsTask
from data_schema.manifest import TrackingConfig
from labeler.cli._app import (
    KeepDuplicatesOpt,
    StillThresholdOpt,
    StrideOpt,
    TrackMaxDepthJumpOpt,
    TrackMaxGapOpt,
    TrackMinIouOpt,
    _gpus,
    app,
    run,
)
from labeler.cli.options import (
    AmpOpt,
    BatchSizeOpt,
    EpochsOpt,
    GpuOpt,
    HeldoutFracOpt,
    IncludeRejectedOpt,
    LrOpt,
    ResumeOpt,
    SeedOpt,
    TrainSelectionOpt,
    WeightDecayOpt,
    WorkersOpt,
    config_of,
    with_help,
)

if TYPE_CHECKING:
    from data_schema.heads import HeldoutFigures

HEADS_REJECTED = "also train on samples and objects a review rejected (default: left out)"


def _heldout_line(figures: HeldoutFigures) -> str:
    names = {
        "abs_rel": "AbsRel",
        "delta1": "δ1",
        "fg_iou": "fg IoU",
        "mask_miou": "mask mIoU",
        "mask_ap50": "mask AP50",
        "heldout_loss": "loss",
    }
    values = {k: getattr(figures, k) for k in names}
    return ", ".join(f"{label} {values[k]:.3f}" for k, label in names.items() if values[k] is not None)


@app.command("train-heads")
def train_heads_cmd(
    dataset: Annotated[Path, typer.Argument(help="pseudo-label dataset folder (labeler pseudo-label / run)")],
    out: Annotated[Path, typer.Option(help="run folder: config, metrics, curves, previews, checkpoints")],
    backbone: Annotated[Backbone, typer.Option(help="DINOv2 size; tiny: random, for tests")] = "vits",
    weights: Annotated[
        Path | None, typer.Option(help="local DINOv2 / Depth Anything V2 / FoundationStereo checkpoint")
    ] = None,
    random_init: Annotated[bool, typer.Option(help="no weights: seeded random init (tests, demos)")] = False,
    task: Annotated[
        HeadsTask, typer.Option(help="heads to train; fusion: both, with a joint head")
    ] = "fusion",
    max_depth_m: Annotated[float, typer.Option(help="metric depth output bound, m")] = 20.0,
    input_size: Annotated[int, typer.Option(help="short side fed to the ViT, multiple of 14")] = 518,
    depth_loss: Annotated[DepthLoss, typer.Option(help="depth loss: scale-invariant log, or L1")] = "silog",
    seg_loss: Annotated[SegLoss, typer.Option(help="segmentation loss of the objectness maps")] = "bce",
    depth_weight: Annotated[float, typer.Option(help="fusion: weight of the depth loss")] = 0.5,
    seg_weight: Annotated[float, typer.Option(help="fusion: weight of the segmentation loss")] = 0.5,
    epochs: EpochsOpt = 10,
    batch_size: BatchSizeOpt = 4,
    lr: Annotated[float, with_help(LrOpt, "heads' AdamW learning rate")] = 1e-4,
    weight_decay: WeightDecayOpt = 0.01,
    heldout_frac: HeldoutFracOpt = 0.2,
    augment: Annotated[bool, typer.Option(help="flips, colour jitter, crops")] = True,
    seed: Annotated[int, with_help(SeedOpt, "seed of the split, the init and the augmentations")] = 0,
    workers: WorkersOpt = 2,
    gpu: GpuOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
    previews: Annotated[int, typer.Option(help="held-out samples drawn per epoch")] = 3,
    include_rejected: Annotated[bool, with_help(IncludeRejectedOpt, HEADS_REJECTED)] = False,
    selection: TrainSelectionOpt = None,
) -> None:
    """Train depth / segmentation / fusion heads on a frozen DINOv2 from a pseudo-label dataset."""
    flags = dict(locals())  # every flag, named as its field of the config, but the model's
    model = {k: flags.pop(k) for k in ("backbone", "task", "max_depth_m", "input_size")}
    from data_schema.commands import HeadsModelConfig, TrainHeadsConfig
    from labeler.train import train_heads

    def build() -> TrainHeadsConfig:
        return config_of(TrainHeadsConfig, flags, model=HeadsModelConfig(**model))

    res = run(build, train_heads)
    if not res.main:
        return
    if res.history:
        first, last = res.history[0], res.history[-1]
        typer.echo(
            f"{res.run_dir}: {len(res.history)} epochs on {res.n_train} samples ({res.n_heldout} held out); "
            f"train loss {first.train_loss:.4f} -> {last.train_loss:.4f}"
        )
        typer.echo(f"held-out (epoch {last.epoch}): {_heldout_line(last) or 'no held-out samples'}")
    else:
        typer.echo(f"{res.run_dir}: nothing to train (already at --epochs)")
    typer.echo(f"weights: {res.weights}")
    typer.echo(
        f"curves {res.run_dir / 'curves.png'}, previews {res.run_dir / 'previews'}, "
        f"checkpoint {res.run_dir / 'checkpoints' / 'best.pt'}"
    )


@app.command()
def finetune(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="a train-heads run folder")],
    unfreeze_last: Annotated[int, typer.Option(help="ViT blocks to train, from the last")] = 4,
    lr: Annotated[float, with_help(LrOpt, "learning rate of the last block")] = 1e-5,
    layer_decay: Annotated[float, typer.Option(help="lr factor per block further from the output")] = 0.8,
    head_lr: Annotated[float | None, typer.Option(help="heads' learning rate (default 10 x --lr)")] = None,
    epochs: Annotated[int, with_help(EpochsOpt, "epochs of the finetune")] = 5,
    out: Annotated[Path | None, typer.Option(help="default RUN/finetune")] = None,
    batch_size: Annotated[int | None, with_help(BatchSizeOpt, "default: the run's")] = None,
    workers: Annotated[int | None, with_help(WorkersOpt, "default: the run's")] = None,
    gpu: GpuOpt = None,
    resume: Annotated[bool, with_help(ResumeOpt, "continue the finetune run in --out")] = False,
    include_rejected: Annotated[bool, with_help(IncludeRejectedOpt, HEADS_REJECTED)] = False,
) -> None:
    """Unfreeze the last N ViT blocks of a run (layer-wise lr decay), train, compare held-out metrics."""
    from data_schema.commands import FinetuneConfig
    from labeler.train import finetune as finetune_run

    res = run(
        lambda: FinetuneConfig(
            run=run_dir,
            unfreeze_last=unfreeze_last,
            lr=lr,
            layer_decay=layer_decay,
            head_lr=head_lr,
            epochs=epochs,
            out=out,
            batch_size=batch_size,
            workers=workers,
            gpus=_gpus(gpu),
            resume=resume,
            include_rejected=include_rejected,
        ),
        finetune_run,
    )
    if not res.main or res.comparison is None:
        return
    c = res.comparison
    typer.echo(f"{res.run_dir}: {len(res.history)} epochs with the last {unfreeze_last} blocks unfrozen")
    frozen = c.frozen.model_dump()
    for k, after in c.finetuned.model_dump().items():
        before = frozen[k]
        if after is not None and before is not None:
            typer.echo(f"  held-out {k}: {before:.4f} (frozen) -> {after:.4f} ({after - before:+.4f})")
    typer.echo(f"comparison {res.run_dir / 'comparison.json'}, curves {res.run_dir / 'curves.png'}")


_TRACKING = TrackingConfig()
_STILL_DN: float = PredictConfig.model_fields["still_threshold_dn"].default


@app.command()
def predict(
    inputs: Annotated[
        Path,
        typer.Argument(
            help="an image, a folder of images, rectified left/ + right/, or a sequence: a video (a folder "
            "of videos) or a folder of frames named by their timestamps"
        ),
    ],
    run_dir: Annotated[Path, typer.Option("--run", help="train-heads or finetune run folder")],
    out: Annotated[Path, typer.Option(help="folder for depth .npy, ids PNG, overlay PNG, JSON")],
    layout: Annotated[
        PredictLayout, typer.Option(help="input layout; side-by-side: the left half is used")
    ] = "auto",
    calib: Annotated[
        Path | None, typer.Option(help="rectified stereo input: compare with SGBM depth")
    ] = None,
    gpu: Annotated[int | None, typer.Option(help="CUDA id")] = None,
    checkpoint: Annotated[
        CheckpointName, typer.Option(help="checkpoint of the run: best held-out, or last epoch")
    ] = "best",
    stride: StrideOpt = 1,
    track_min_iou: TrackMinIouOpt = _TRACKING.min_iou,
    track_max_depth_jump_m: TrackMaxDepthJumpOpt = _TRACKING.max_depth_jump_m,
    track_max_gap_frames: TrackMaxGapOpt = _TRACKING.max_gap_frames,
    keep_duplicates: KeepDuplicatesOpt = False,
    still_threshold_dn: StillThresholdOpt = _STILL_DN,
) -> None:
    """Monocular depth + objects with metric depth for new images, from a trained run; a video's objects
    are followed over its frames."""
    from labeler.predict import predict_images, summary_line, track_line

    res = run(
        lambda: PredictConfig(
            inputs=inputs,
            run=run_dir,
            out=out,
            layout=layout,
            calib=calib,
            gpu=gpu,
            checkpoint=checkpoint,
            stride=stride,
            keep_duplicates=keep_duplicates,
            still_threshold_dn=still_threshold_dn,
            tracking=TrackingConfig(
                min_iou=track_min_iou,
                max_depth_jump_m=track_max_depth_jump_m,
                max_gap_frames=track_max_gap_frames,
            ),
        ),
        predict_images,
    )
    if res.tracking is None:  # lone images: one line each; a sequence: one line per track
        for p in res.images:
            typer.echo(summary_line(p))
    for t in res.tracks:
        typer.echo(track_line(t))
    for f in res.failures:
        typer.echo(f"failed {f.image}: {f.error}")
    what = (
        f"{len(res.images)} frames, {len(res.skipped)} still frames skipped, {len(res.tracks)} tracks"
        if res.tracking
        else f"{len(res.images)} images"
    )
    typer.echo(
        f"{what} -> {out} (overlays *_overlay.png, depth *_depth.npy, predictions.json)"
        + (f"; {len(res.failures)} failed" if res.failures else "")
    )
