"""`labeler train-stereo` (registered on the app by labeler/cli.py, which is long enough already).

Nothing heavy is imported here either: torch loads inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _crop(text: str) -> tuple[int, int]:
    from labeler.cli_backends import FlagError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FlagError([f"--crop {text}: expected HEIGHTxWIDTH, e.g. 320x640"]) from None
    return h, w


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()


def train_stereo_cmd(
    dataset: Annotated[Path, typer.Argument(help="pseudo-label dataset folder of the rig")],
    stereo_weights: Annotated[
        Path,
        typer.Option(help="parent FoundationStereo release checkpoint (model_best_bp2.pth, cfg.yaml beside)"),
    ],
    out: Annotated[
        Path, typer.Option(help="run folder: model_best_bp2.pth + cfg.yaml, metrics, curves, previews")
    ],
    epochs: Annotated[int, typer.Option(help="epochs over the training pairs")] = 10,
    batch_size: Annotated[int, typer.Option(help="pairs per step, per process")] = 2,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-4,
    feature_lr_factor: Annotated[float, typer.Option(help="EdgeNeXt features' lr as a factor of --lr")] = 1.0,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 1e-5,
    warmup_frac: Annotated[float, typer.Option(help="linear warm-up share of all steps, then cosine")] = 0.05,
    crop: Annotated[str, typer.Option(help="training crop HEIGHTxWIDTH, multiples of 32")] = "320x640",
    train_iters: Annotated[int, typer.Option(help="GRU iterations in training, each supervised")] = 22,
    valid_iters: Annotated[
        int | None, typer.Option(help="GRU iterations of the held-out pass (default: cfg.yaml's)")
    ] = None,
    max_disp: Annotated[int | None, typer.Option(help="cost volume range, px (default: cfg.yaml's)")] = None,
    distill_weight: Annotated[float, typer.Option(help="weight of the distillation sequence loss")] = 1.0,
    photometric_weight: Annotated[float, typer.Option(help="weight of the photometric loss")] = 1.0,
    smooth_weight: Annotated[float, typer.Option(help="weight of the edge-aware smoothness")] = 0.1,
    sequence_gamma: Annotated[float, typer.Option(help="decay of earlier GRU iterations' weights")] = 0.9,
    confident: Annotated[float, typer.Option(help="held-out pixels scored: confidence >= this")] = 0.5,
    augment: Annotated[
        bool, typer.Option(help="scale, crop, swap-and-flip, asymmetric colour jitter")
    ] = True,
    min_scale: Annotated[float, typer.Option(help="smallest image scale before the crop")] = 0.8,
    max_scale: Annotated[float, typer.Option(help="largest image scale before the crop")] = 1.2,
    flip_prob: Annotated[float, typer.Option(help="share of pairs swapped and mirrored")] = 0.5,
    eval_scale: Annotated[float, typer.Option(help="held-out images resized by this for the network")] = 1.0,
    freeze: Annotated[
        str | None, typer.Option(help="more modules to freeze, comma-separated (e.g. feature,cnet)")
    ] = None,
    heldout_frac: Annotated[float, typer.Option(help="share of sample ids held out for metrics")] = 0.2,
    truth: Annotated[
        Path | None, typer.Option(help="truth disparity: a `labeler demo` folder or <sample_id>.npy files")
    ] = None,
    allow_other_size: Annotated[
        bool, typer.Option(help="train although the parent was tuned on another image size")
    ] = False,
    seed: Annotated[int, typer.Option(help="seed of the split and the augmentations")] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader workers per process")] = 2,
    gpu: Annotated[str | None, typer.Option(help="CUDA ids, e.g. 0 or 0,1 (DDP)")] = None,
    amp: Annotated[bool, typer.Option(help="bf16 autocast on CUDA")] = True,
    resume: Annotated[bool, typer.Option(help="continue the run in --out")] = False,
    previews: Annotated[int, typer.Option(help="held-out pairs drawn per epoch")] = 2,
) -> None:
    """Fine-tune FoundationStereo on a rig's own pseudo-label dataset; writes a release-layout checkpoint."""
    from data_schema.stereo_train import TrainStereoConfig
    from labeler.cli import _gpus, run
    from labeler.train.stereo_api import train_stereo

    def build() -> TrainStereoConfig:
        return TrainStereoConfig(
            dataset=dataset,
            out=out,
            stereo_weights=stereo_weights,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            feature_lr_factor=feature_lr_factor,
            weight_decay=weight_decay,
            warmup_frac=warmup_frac,
            crop=_crop(crop),
            train_iters=train_iters,
            valid_iters=valid_iters,
            max_disp=max_disp,
            distill_weight=distill_weight,
            photometric_weight=photometric_weight,
            smooth_weight=smooth_weight,
            sequence_gamma=sequence_gamma,
            confident=confident,
            augment=augment,
            min_scale=min_scale,
            max_scale=max_scale,
            flip_prob=flip_prob,
            eval_scale=eval_scale,
            freeze=_names(freeze),
            heldout_frac=heldout_frac,
            truth=truth,
            allow_other_size=allow_other_size,
            seed=seed,
            workers=workers,
            gpus=_gpus(gpu),
            amp=amp,
            resume=resume,
            previews=previews,
        )

    res = run(build, train_stereo)
    if not res.main or res.summary is None:
        return
    s = res.summary
    typer.echo(
        f"{res.run_dir}: {len(res.history)} epochs on {res.n_train} pairs ({res.n_heldout} held out); "
        f"best epoch {s.best_epoch}"
    )
    for key, label in (
        ("epe_px", "EPE vs pseudo-labels, px"),
        ("bad2_percent", "bad-2 vs pseudo-labels, %"),
        ("photometric", "photometric error"),
        ("truth_epe_px", "EPE vs truth, px"),
        ("truth_bad2_percent", "bad-2 vs truth, %"),
    ):
        before, after = getattr(s.before, key), getattr(s.after, key)
        if before is not None and after is not None:
            typer.echo(f"  held-out {label}: {before:.3f} (parent) -> {after:.3f} ({after - before:+.3f})")
    typer.echo(f"checkpoint {s.weights} (cfg.yaml beside it; use it with --stereo-weights)")
    typer.echo(f"summary {res.run_dir / 'summary.json'}, curves {res.run_dir / 'curves.png'}")
