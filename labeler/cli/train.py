"""`labeler train-stereo`, `labeler train-sam2` and `labeler adapt-backbone`: the trainers' commands.

Nothing heavy is imported here either: torch loads inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from data_schema.dino_adapt import Export  # adapt-backbone's choices (pydantic only, no torch)
from data_schema.heads import Backbone
from labeler.cli._app import app, run
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
    WarmupOpt,
    WeightDecayOpt,
    WorkersOpt,
    config_of,
    with_help,
)

if TYPE_CHECKING:
    from labeler.train.dino.api import AdaptResult
    from labeler.train.sam2.api import Sam2TrainResult
    from labeler.train.stereo.api import StereoTrainResult


def _crop(text: str) -> tuple[int, int]:
    from labeler.cli.backends import FlagError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FlagError([f"--crop {text}: expected HEIGHTxWIDTH, e.g. 320x640"]) from None
    return h, w


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()


@app.command("train-stereo")
def train_stereo_cmd(
    dataset: Annotated[Path, typer.Argument(help="pseudo-label dataset folder of the rig")],
    stereo_weights: Annotated[
        Path,
        typer.Option(help="parent FoundationStereo release checkpoint (model_best_bp2.pth, cfg.yaml beside)"),
    ],
    out: Annotated[
        Path, typer.Option(help="run folder: model_best_bp2.pth + cfg.yaml, metrics, curves, previews")
    ],
    epochs: Annotated[int, with_help(EpochsOpt, "epochs over the training pairs")] = 10,
    batch_size: Annotated[int, with_help(BatchSizeOpt, "pairs per step, per process")] = 2,
    lr: LrOpt = 1e-4,
    feature_lr_factor: Annotated[float, typer.Option(help="EdgeNeXt features' lr as a factor of --lr")] = 1.0,
    weight_decay: WeightDecayOpt = 1e-5,
    warmup_frac: WarmupOpt = 0.05,
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
    heldout_frac: HeldoutFracOpt = 0.2,
    truth: Annotated[
        Path | None, typer.Option(help="truth disparity: a `labeler demo` folder or <sample_id>.npy files")
    ] = None,
    allow_other_size: Annotated[
        bool, typer.Option(help="train although the parent was tuned on another image size")
    ] = False,
    seed: SeedOpt = 0,
    workers: WorkersOpt = 2,
    gpu: GpuOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
    previews: Annotated[int, typer.Option(help="held-out pairs drawn per epoch")] = 2,
    include_rejected: IncludeRejectedOpt = False,
    selection: TrainSelectionOpt = None,
) -> None:
    """Fine-tune FoundationStereo on a rig's own pseudo-label dataset; writes a release-layout checkpoint."""
    flags = dict(locals())  # every flag, named as its field of the config
    from data_schema.stereo_train import TrainStereoConfig
    from labeler.train.stereo.api import train_stereo

    res = run(
        lambda: config_of(TrainStereoConfig, flags, crop=_crop(crop), freeze=_names(freeze)), train_stereo
    )
    _echo_stereo(res)


@app.command("train-sam2")
def train_sam2_cmd(
    dataset: Annotated[Path, typer.Argument(help="pseudo-label dataset folder whose masks are the targets")],
    sam2_checkpoint: Annotated[
        Path, typer.Option(help="parent SAM2 checkpoint (.pt, {'model': ...} as released)")
    ],
    out: Annotated[Path, typer.Option(help="run folder: sam2.pt, metrics, curves, previews, summary.json")],
    sam2_config: Annotated[
        str, typer.Option(help="config name (sam2.1_hiera_t|s|b+|l) or YAML path of the checkpoint")
    ] = "sam2.1_hiera_s",
    epochs: Annotated[int, with_help(EpochsOpt, "epochs over the training images")] = 10,
    batch_size: Annotated[int, with_help(BatchSizeOpt, "images per step, per process")] = 4,
    objects_per_image: Annotated[int, typer.Option(help="target objects drawn per training image")] = 3,
    lr: Annotated[
        float, with_help(LrOpt, "AdamW learning rate of the prompt encoder and mask decoder")
    ] = 1e-5,
    train_encoder: Annotated[
        bool, typer.Option(help="train the image encoder too, at a lower layer-wise rate (no cache)")
    ] = False,
    encoder_lr_factor: Annotated[float, typer.Option(help="image encoder's lr as a factor of --lr")] = 0.6,
    layer_decay: Annotated[float, typer.Option(help="encoder rate x this per block below the top")] = 0.9,
    weight_decay: WeightDecayOpt = 0.01,
    warmup_frac: WarmupOpt = 0.05,
    corrections: Annotated[
        int, typer.Option(help="corrective clicks per step, from the previous errors")
    ] = 7,
    box_prob: Annotated[
        float, typer.Option(help="share of steps prompted by a box instead of a click")
    ] = 0.5,
    gt_click_prob: Annotated[
        float, typer.Option(help="share of corrective clicks drawn from the target")
    ] = 0.1,
    focal_weight: Annotated[float, typer.Option(help="weight of the focal loss")] = 20.0,
    dice_weight: Annotated[float, typer.Option(help="weight of the dice loss")] = 1.0,
    iou_weight: Annotated[float, typer.Option(help="weight of the IoU-prediction L1 loss")] = 1.0,
    object_score_weight: Annotated[float, typer.Option(help="weight of the object-score loss")] = 1.0,
    min_score: Annotated[float, typer.Option(help="objects with a lower mask score are no targets")] = 0.0,
    min_area: Annotated[int, typer.Option(help="objects smaller than this many px are no targets")] = 0,
    include_rejected: Annotated[
        bool, with_help(IncludeRejectedOpt, "keep samples and objects rejected in review as targets")
    ] = False,
    cache_embeddings: Annotated[
        bool, typer.Option(help="keep the frozen encoder's output per image in host memory")
    ] = True,
    heldout_frac: HeldoutFracOpt = 0.2,
    heldout_objects: Annotated[int, typer.Option(help="held-out objects scored per image, at most")] = 16,
    amg_points_per_side: Annotated[
        int, typer.Option(help="automatic generator's grid on held-out images (0: no recall)")
    ] = 16,
    amg_pred_iou_thresh: Annotated[float, typer.Option(help="automatic generator's pred_iou_thresh")] = 0.8,
    amg_stability_thresh: Annotated[
        float, typer.Option(help="automatic generator's stability_score_thresh")
    ] = 0.95,
    seed: Annotated[int, with_help(SeedOpt, "seed of the split, the objects drawn and the prompts")] = 0,
    workers: WorkersOpt = 2,
    gpu: GpuOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
    previews: Annotated[int, typer.Option(help="held-out images drawn per epoch")] = 2,
    selection: TrainSelectionOpt = None,
) -> None:
    """Retrain SAM2's prompt encoder and mask decoder on a dataset's masks; writes OUT/sam2.pt."""
    flags = dict(locals())  # every flag, named as its field of the config
    from data_schema.sam2_train import TrainSam2Config
    from labeler.train.sam2.api import train_sam2

    res = run(lambda: config_of(TrainSam2Config, flags), train_sam2)
    _echo_sam2(res)


def _pair(text: str, flag: str) -> tuple[float, float]:
    from labeler.cli.backends import FlagError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise FlagError([f"{flag} {text}: expected LOW,HIGH, e.g. 0.32,1.0"]) from None
    return lo, hi


@app.command("adapt-backbone")
def adapt_backbone_cmd(
    dataset: Annotated[Path, typer.Argument(help="pseudo-label dataset: left images train, held-out probes")],
    out: Annotated[
        Path, typer.Option(help="run folder: backbone.pth, warmup/, adapt/, probe/, summary.json")
    ],
    weights: Annotated[
        Path | None,
        typer.Option(help="parent checkpoint: DINOv2 (official), Depth Anything V2, FoundationStereo"),
    ] = None,
    backbone: Annotated[Backbone, typer.Option(help="DINOv2 size (tiny: random, for tests)")] = "vits",
    random_init: Annotated[bool, typer.Option(help="no parent: a seeded random ViT (tests, demos)")] = False,
    images: Annotated[
        Path | None, typer.Option(help="a folder of more images (captures) to train on")
    ] = None,
    head_epochs: Annotated[int, typer.Option(help="warm-up epochs: projection heads only")] = 2,
    epochs: Annotated[int, with_help(EpochsOpt, "adaptation epochs")] = 10,
    unfreeze_last: Annotated[int, typer.Option(help="last ViT blocks trained in full")] = 2,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank on the other blocks (peft); 0: none")] = 0,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default: the rank)")] = None,
    batch_size: Annotated[int, with_help(BatchSizeOpt, "images per step, per process")] = 8,
    lr: Annotated[float, with_help(LrOpt, "projection heads' AdamW learning rate")] = 1e-3,
    backbone_lr: Annotated[float, typer.Option(help="deepest unfrozen block's learning rate")] = 1e-5,
    lora_lr: Annotated[float, typer.Option(help="LoRA adapters' learning rate")] = 1e-4,
    layer_decay: Annotated[float, typer.Option(help="each earlier unfrozen block's lr x this")] = 0.9,
    weight_decay: WeightDecayOpt = 0.04,
    warmup_frac: Annotated[float, with_help(WarmupOpt, "linear lr warm-up share of each phase")] = 0.1,
    global_size: Annotated[int, typer.Option(help="global crop side, px (multiple of 14)")] = 224,
    local_size: Annotated[int, typer.Option(help="local crop side, px (multiple of 14)")] = 98,
    local_crops: Annotated[int, typer.Option(help="local crops per image")] = 8,
    global_scale: Annotated[str, typer.Option(help="global crops' share of the area, LOW,HIGH")] = "0.32,1.0",
    local_scale: Annotated[str, typer.Option(help="local crops' share of the area, LOW,HIGH")] = "0.05,0.32",
    mask_probability: Annotated[float, typer.Option(help="share of global crops masked (iBOT)")] = 0.5,
    mask_ratio: Annotated[str, typer.Option(help="masked share of a masked crop, LOW,HIGH")] = "0.1,0.5",
    prototypes: Annotated[int, typer.Option(help="prototypes of the projection head")] = 65536,
    head_hidden: Annotated[int, typer.Option(help="projection head's hidden width")] = 2048,
    head_bottleneck: Annotated[int, typer.Option(help="projection head's bottleneck width")] = 256,
    dino_weight: Annotated[float, typer.Option(help="weight of the class-token DINO loss")] = 1.0,
    ibot_weight: Annotated[float, typer.Option(help="weight of the masked-patch iBOT loss")] = 1.0,
    koleo_weight: Annotated[float, typer.Option(help="weight of the KoLeo regulariser")] = 0.1,
    teacher_temp: Annotated[float, typer.Option(help="teacher temperature after its warm-up")] = 0.07,
    warmup_teacher_temp: Annotated[float, typer.Option(help="teacher temperature at the start")] = 0.04,
    momentum: Annotated[float, typer.Option(help="teacher EMA momentum at the start (cosine to 1)")] = 0.992,
    teacher_temp_warmup_frac: Annotated[
        float, typer.Option(help="share of all steps over which the teacher temperature warms up")
    ] = 0.3,
    student_temp: Annotated[float, typer.Option(help="student temperature")] = 0.1,
    sinkhorn_iterations: Annotated[int, typer.Option(help="Sinkhorn-Knopp rounds of the teacher")] = 3,
    clip_grad: Annotated[float, typer.Option(help="largest gradient norm")] = 3.0,
    export: Annotated[Export, typer.Option(help="backbone.pth: the EMA teacher or the student")] = "teacher",
    probe_epochs: Annotated[int, typer.Option(help="epochs of each depth-head probe; 0: no probe")] = 10,
    probe_input_size: Annotated[int, typer.Option(help="probe's short side, multiple of 14")] = 518,
    probe_lr: Annotated[float, typer.Option(help="probe's learning rate")] = 1e-3,
    probe_batch_size: Annotated[int, typer.Option(help="probe's batch size")] = 4,
    probe_max_depth_m: Annotated[float, typer.Option(help="probe's depth bound, m")] = 20.0,
    heldout_frac: Annotated[
        float, with_help(HeldoutFracOpt, "share of sample ids held out (never adapted on)")
    ] = 0.2,
    include_rejected: Annotated[
        bool, with_help(IncludeRejectedOpt, "also train on samples a review rejected")
    ] = False,
    seed: Annotated[int, with_help(SeedOpt, "seed of the split, the heads' init and every crop")] = 0,
    workers: WorkersOpt = 2,
    gpu: GpuOpt = None,
    amp: AmpOpt = True,
    resume: ResumeOpt = False,
    selection: TrainSelectionOpt = None,
) -> None:
    """Adapt DINOv2 to the rig's images (DINO + iBOT + KoLeo, EMA teacher); writes OUT/backbone.pth."""
    flags = dict(locals())  # every flag, named as its field of the config
    from data_schema.dino_adapt import AdaptBackboneConfig
    from labeler.train.dino.api import adapt_backbone

    res = run(
        lambda: config_of(
            AdaptBackboneConfig,
            flags,
            global_scale=_pair(global_scale, "--global-scale"),
            local_scale=_pair(local_scale, "--local-scale"),
            mask_ratio=_pair(mask_ratio, "--mask-ratio"),
        ),
        adapt_backbone,
    )
    _echo_adapt(res)


def _echo_changes(before: Any, after: Any, **labels: str) -> None:
    """One line per held-out figure both records have: the parent's, the trained model's, the change."""
    for key, label in labels.items():
        b, a = getattr(before, key), getattr(after, key)
        if b is not None and a is not None:
            typer.echo(f"  held-out {label}: {b:.3f} (parent) -> {a:.3f} ({a - b:+.3f})")


def _echo_stereo(res: StereoTrainResult) -> None:
    """What a train-stereo run did, on the main process of a finished run."""
    if not res.main or res.summary is None:
        return
    s = res.summary
    typer.echo(
        f"{res.run_dir}: {len(res.history)} epochs on {res.n_train} pairs ({res.n_heldout} held out); "
        f"best epoch {s.best_epoch}"
    )
    _echo_changes(
        s.before,
        s.after,
        epe_px="EPE vs pseudo-labels, px",
        bad2_percent="bad-2 vs pseudo-labels, %",
        photometric="photometric error",
        truth_epe_px="EPE vs truth, px",
        truth_bad2_percent="bad-2 vs truth, %",
    )
    typer.echo(f"checkpoint {s.weights} (cfg.yaml beside it; use it with --stereo-weights)")
    typer.echo(f"summary {res.run_dir / 'summary.json'}, curves {res.run_dir / 'curves.png'}")


def _echo_sam2(res: Sam2TrainResult) -> None:
    """What a train-sam2 run did, on the main process of a finished run."""
    if not res.main or res.summary is None:
        return
    s = res.summary
    typer.echo(
        f"{res.run_dir}: {len(res.history)} epochs on {res.n_train} images ({s.n_train_objects} objects; "
        f"{res.n_heldout} images held out); best epoch {s.best_epoch}"
    )
    _echo_changes(
        s.before,
        s.after,
        point_miou="mIoU, one centre click",
        box_miou="mIoU, exact box",
        amg_recall="automatic masks' matched recall",
        amg_masks_per_image="automatic masks per image",
    )
    typer.echo(
        f"checkpoint {s.checkpoint}: use it with --masks sam2 --sam2-checkpoint {s.checkpoint} "
        f"--sam2-config {s.sam2_config}"
    )
    typer.echo(f"summary {res.run_dir / 'summary.json'}, curves {res.run_dir / 'curves.png'}")


def _echo_adapt(res: AdaptResult) -> None:
    """What an adapt-backbone run did, on the main process of a finished run."""
    if not res.main or res.summary is None:
        return
    s = res.summary
    for name, rows in (("heads warm-up", res.warmup), ("adaptation", res.adapt)):
        if rows:
            typer.echo(
                f"{name}: {len(rows)} epochs, train loss {rows[0].train_loss:.4f} -> "
                f"{rows[-1].train_loss:.4f}"
                + (f", held-out {rows[-1].heldout_loss:.4f}" if rows[-1].heldout_loss is not None else "")
            )
    typer.echo(f"{res.run_dir}: {res.n_train} training images, {res.n_heldout} held out; {s.steps} steps")
    b, a = s.probe_before, s.probe_after
    if b is not None and a is not None and b.abs_rel is not None and a.abs_rel is not None:
        typer.echo(
            f"probe (depth head, {a.epochs} epochs, frozen backbone), held-out AbsRel: "
            f"{b.abs_rel:.4f} (parent) -> {a.abs_rel:.4f} (adapted), {a.abs_rel - b.abs_rel:+.4f}"
        )
    typer.echo(f"backbone {s.weights} ({s.export}; use it with train-heads --weights)")
    typer.echo(f"summary {res.run_dir / 'summary.json'}, curves {res.run_dir / 'adapt' / 'curves.png'}")
