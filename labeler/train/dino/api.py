"""`adapt_backbone`: continue DINOv2's self-supervised training on a rig's own images (two phases of the
dino task on the engine, see labeler/train/dino/task.py), then probe the frozen features before and after
with the depth head (train-heads for a fixed budget, held-out AbsRel). Each bad input is one line naming
its flag."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from data_schema.dino_adapt import AdaptBackboneConfig, AdaptRunSummary, DinoEpochMetrics, ProbeFigures
from labeler.errors import LabelerError, WeightsError

if TYPE_CHECKING:
    from labeler.train.dino.model import Schedules

log = logging.getLogger(__name__)
PARENT_RANDOM = "parent.pth"  # OUT/parent.pth: the seeded random ViT of --random-init
PROBE_PARENT = "parent_backbone.pth"  # OUT/probe/: the parent's ViT alone, when --weights holds more


@dataclass(frozen=True)
class AdaptResult:
    """What an adapt-backbone run did; `summary` is OUT/summary.json (None in the other DDP ranks)."""

    run_dir: Path
    warmup: list[DinoEpochMetrics]
    adapt: list[DinoEpochMetrics]
    summary: AdaptRunSummary | None
    n_train: int
    n_heldout: int
    main: bool


def _random_parent(cfg: AdaptBackboneConfig) -> Path:
    """OUT/parent.pth: the seeded random ViT (the same file on every resume)."""
    from labeler.models.dinov2_dpt import DinoViT
    from labeler.train.dino.model import save_backbone
    from labeler.train.heads.model import BACKBONE_SPECS

    path = cfg.out / PARENT_RANDOM
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vit = DinoViT(BACKBONE_SPECS[cfg.backbone])
            for p in (vit.cls_token, vit.pos_embed, vit.mask_token):  # zeros in the module: give them values
                torch.nn.init.trunc_normal_(p, std=0.02)
        save_backbone(path, {k: v.contiguous() for k, v in vit.state_dict().items()})
    return path


def check_inputs(cfg: AdaptBackboneConfig) -> tuple[Any, list[Path], str]:
    """(dataset reader, --images files, parent kind) — or one LabelerError line naming the flag."""
    from labeler import open_dataset
    from labeler.train.dino.data import folder_images
    from labeler.train.dino.model import parent_vit_state
    from labeler.train.heads.model import BACKBONE_SPECS

    if cfg.random_init and cfg.weights is not None:
        raise WeightsError(f"--weights {cfg.weights} with --random-init: choose one")
    if not cfg.random_init and cfg.weights is None:
        raise WeightsError(
            f"no parent for --backbone {cfg.backbone}: pass --weights <checkpoint.pth> (DINOv2, Depth "
            f"Anything V2 or FoundationStereo, local file), or --random-init for a test run"
        )
    kind = "random-init"
    if cfg.weights is not None:
        kind, _ = parent_vit_state(cfg.weights, cfg.backbone)
    depth = BACKBONE_SPECS[cfg.backbone].depth
    if cfg.unfreeze_last > depth:
        raise LabelerError(f"--unfreeze-last {cfg.unfreeze_last}: the {cfg.backbone} ViT has {depth} blocks")
    if cfg.lora_rank and cfg.unfreeze_last == depth:
        raise LabelerError(
            f"--lora-rank {cfg.lora_rank}: --unfreeze-last {depth} already trains every block; lower it"
        )
    if cfg.lora_rank:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise LabelerError(
                f"--lora-rank {cfg.lora_rank} needs the peft package (pip install peft)"
            ) from None
    ds = open_dataset(cfg.dataset)
    files: list[Path] = []
    if cfg.images is not None:
        if not cfg.images.is_dir():
            raise LabelerError(f"--images {cfg.images}: no such folder")
        files = folder_images(cfg.images)
        if not files:
            raise LabelerError(f"--images {cfg.images}: no image files (png, jpg, bmp, tif) in it")
    return ds, files, kind


def _world(gpus: tuple[int, ...]) -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if "WORLD_SIZE" in os.environ else max(len(gpus), 1)


def probe(cfg: AdaptBackboneConfig, weights: Path, out: Path) -> ProbeFigures:
    """The depth head trained for `probe_epochs` on the frozen backbone of `weights` (train-heads, the
    dataset's split); its held-out figures at the last epoch (a fixed budget: no epoch is chosen)."""
    from data_schema.commands import HeadsModelConfig, TrainHeadsConfig
    from labeler.train.heads.api import train_heads

    model = HeadsModelConfig(
        backbone=cfg.backbone,
        task="depth",
        max_depth_m=cfg.probe_max_depth_m,
        input_size=cfg.probe_input_size,
    )
    heads_cfg = TrainHeadsConfig(
        dataset=cfg.dataset,
        out=out,
        model=model,
        weights=weights,
        epochs=cfg.probe_epochs,
        batch_size=cfg.probe_batch_size,
        lr=cfg.probe_lr,
        heldout_frac=cfg.heldout_frac,
        augment=False,
        seed=cfg.seed,
        workers=cfg.workers,
        gpus=cfg.gpus,
        amp=cfg.amp,
        resume=cfg.resume,
        previews=1,
        include_rejected=cfg.include_rejected,  # the same samples as the adaptation's split
        selection=cfg.selection,
    )
    res = train_heads(heads_cfg)
    last = res.history[-1] if res.history else None
    return ProbeFigures(
        run=str(out),
        weights=str(weights),
        epochs=len(res.history),
        abs_rel=last.abs_rel if last else None,
        delta1=last.delta1 if last else None,
        heldout_loss=last.heldout_loss if last else None,
    )


def _schedules(cfg: AdaptBackboneConfig, total: int) -> Schedules:
    """The teacher's temperature and momentum over the `total` steps of warm-up + adaptation."""
    from labeler.train.dino.model import Schedules

    return Schedules(
        total_steps=total,
        teacher_temp=cfg.teacher_temp,
        warmup_teacher_temp=cfg.warmup_teacher_temp,
        warmup_steps=max(1, round(cfg.teacher_temp_warmup_frac * total)),
        momentum=cfg.momentum,
    )


def _probes(cfg: AdaptBackboneConfig, parent: Path, kind: str) -> tuple[ProbeFigures, ProbeFigures]:
    """The depth-head probe of the parent's backbone and of OUT/backbone.pth (every rank: under torchrun
    the probes are data-parallel too)."""
    from labeler.train.dino.model import parent_vit_state, save_backbone

    probe_parent = parent
    if kind not in ("dinov2", "random-init"):  # probe the parent's ViT alone, with a fresh head
        probe_parent = cfg.out / "probe" / PROBE_PARENT
        save_backbone(probe_parent, parent_vit_state(parent, cfg.backbone)[1])  # atomic, same bytes
    before = probe(cfg, probe_parent, cfg.out / "probe" / "before")
    return before, probe(cfg, cfg.out / "backbone.pth", cfg.out / "probe" / "after")


@dataclass(frozen=True)
class _Inputs:
    """What a run starts from: the dataset, the --images files, the parent and the split."""

    ds: Any
    files: list[Path]
    kind: str  # the parent's kind (dinov2, depth-anything-v2, foundation-stereo, random-init)
    parent: Path
    parent_sha: str
    train_ids: list[str]
    held_ids: list[str]

    @property
    def n_train(self) -> int:
        return len(self.train_ids) + len(self.files)


def _inputs(cfg: AdaptBackboneConfig) -> _Inputs:
    from labeler.dataset.decisions import kept_sample_ids
    from labeler.io import sha256_file
    from labeler.train.sampling import selected_ids, split_ids

    ds, files, kind = check_inputs(cfg)
    train_all, held_all = split_ids(selected_ids(ds, cfg.selection), cfg.heldout_frac, seed=cfg.seed)
    train_ids = kept_sample_ids(ds, train_all, include_rejected=cfg.include_rejected)
    held_ids = kept_sample_ids(ds, held_all, include_rejected=cfg.include_rejected)
    n_train = len(train_ids) + len(files)
    if n_train < 2:
        raise LabelerError(f"{cfg.dataset}: {n_train} training image(s); the objective needs two or more")
    parent = cfg.weights.expanduser() if cfg.weights is not None else _random_parent(cfg)
    return _Inputs(ds, files, kind, parent, sha256_file(parent), train_ids, held_ids)


def _summary(
    cfg: AdaptBackboneConfig,
    inputs: _Inputs,
    steps: int,
    before: ProbeFigures | None,
    after: ProbeFigures | None,
) -> AdaptRunSummary:
    from labeler.io import sha256_file

    weights = cfg.out / "backbone.pth"
    change = (
        after.abs_rel - before.abs_rel
        if before and after and before.abs_rel is not None and after.abs_rel is not None
        else None
    )
    return AdaptRunSummary(
        parent_weights=str(inputs.parent),
        parent_sha256=inputs.parent_sha,
        dataset=str(cfg.dataset),
        dataset_version=inputs.ds.version,
        n_train_images=inputs.n_train,
        n_heldout=len(inputs.held_ids),
        weights=str(weights),
        weights_sha256=sha256_file(weights),
        export=cfg.export,
        steps=steps,
        probe_before=before,
        probe_after=after,
        abs_rel_change=change,
    )


def adapt_backbone(cfg: AdaptBackboneConfig, *, stop_after_epoch: int | None = None) -> AdaptResult:
    """Warm up the projection heads on the frozen parent, adapt the backbone, export OUT/backbone.pth,
    probe before / after; see labeler/train/dino/task.py."""
    from labeler.dataset.licences import RUN_LICENCES, parent_licences
    from labeler.io import write_text_atomic
    from labeler.train.dino.task import DinoTask
    from labeler.train.dist import is_main_process
    from labeler.train.engine import EngineSpec, Finished, launch, run_licences, train_and_summarise
    from labeler.train.heads.model import BACKBONE_SPECS
    from labeler.train.run_folder import library_versions

    r = _inputs(cfg)
    random_parent = r.kind == "random-init"
    parents = parent_licences(
        r.kind, None if random_parent else r.parent, weights_sha256=None if random_parent else r.parent_sha
    )
    spe = math.ceil(math.ceil(r.n_train / _world(cfg.gpus)) / cfg.batch_size)
    warm_steps, adapt_steps = cfg.head_epochs * spe, cfg.epochs * spe
    schedules = _schedules(cfg, warm_steps + adapt_steps)
    record = {
        "command": "adapt-backbone",
        "config": cfg.model_dump(mode="json"),
        "parent_weights": str(r.parent),
        "parent_kind": r.kind,
        "parent_sha256": r.parent_sha,
        "dataset_version": r.ds.version,
        "n_train_images": r.n_train,
        "n_folder_images": len(r.files),
        "n_heldout": len(r.held_ids),
        "steps": {"warmup": warm_steps, "adapt": adapt_steps},
        "versions": library_versions("peft"),
    }

    def phase(name: str, epochs: int, title: str, **more: Any) -> EngineSpec:
        """One phase: an engine run in its own folder (OUT/warmup, OUT/adapt) with the config's settings."""
        spec = BACKBONE_SPECS[cfg.backbone]
        task = DinoTask(
            cfg=cfg, phase=name, spec=spec, parent=r.parent, schedules=schedules, files=tuple(r.files), **more
        )
        return EngineSpec(
            task=task,
            settings=cfg.model_copy(update={"out": cfg.out / name, "epochs": epochs}),
            record={**record, "phase": name},
            train_ids=r.train_ids,
            heldout_ids=r.held_ids,
            title=f"adapt-backbone {cfg.backbone} {title}: {cfg.out.name}",
            clip_grad_norm=cfg.clip_grad,
            extra={"parent_sha256": r.parent_sha, "dataset_version": r.ds.version},
            licences=tuple(parents),
        )

    def result(warm: list[Any], adapt: list[Any], summary: AdaptRunSummary | None) -> AdaptResult:
        return AdaptResult(cfg.out, warm, adapt, summary, r.n_train, len(r.held_ids), is_main_process())

    warm_history: list[Any] = []
    if cfg.head_epochs:
        warm = phase("warmup", cfg.head_epochs, "heads warm-up")
        warm_history = launch(warm, stop_after_epoch=stop_after_epoch)
        if stop_after_epoch is not None and len(warm_history) < cfg.head_epochs:
            return result(warm_history, [], None)
    warm_last = cfg.out / "warmup" / "checkpoints" / "last.pt" if cfg.head_epochs else None
    adapt = phase(
        "adapt", cfg.epochs, "adaptation", warm_checkpoint=warm_last, export_to=cfg.out / "backbone.pth"
    )
    if is_main_process():  # beside OUT/backbone.pth: what train-heads --weights it inherits
        write_text_atomic(cfg.out / RUN_LICENCES, run_licences(adapt).model_dump_json(indent=1))

    def summarise(end: Finished) -> AdaptRunSummary | None:
        before, after = _probes(cfg, r.parent, r.kind) if cfg.probe_epochs and r.held_ids else (None, None)
        return _summary(cfg, r, warm_steps + adapt_steps, before, after) if is_main_process() else None

    remaining = None if stop_after_epoch is None else stop_after_epoch - cfg.head_epochs
    history, summary = train_and_summarise(
        adapt, summarise, cfg.out / "summary.json", all_ranks=True, stop_after_epoch=remaining
    )
    return result(warm_history, history, summary)
