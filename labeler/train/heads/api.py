"""`train_heads` (frozen DINOv2, heads trained) and `finetune` (last ViT blocks unfrozen, layer-wise lr):
the heads task (labeler/train/heads/task.py) on the engine (labeler/train/engine.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from data_schema.commands import FinetuneConfig, TrainHeadsConfig
from data_schema.heads import EpochMetrics, FinetuneComparison, HeadsModelConfig
from data_schema.licences import ModelLicence
from labeler.errors import LabelerError, WeightsError
from labeler.train.dist import is_main_process
from labeler.train.engine import EngineSpec, Finished, launch, train_and_summarise
from labeler.train.heads.losses import LossWeights
from labeler.train.heads.model import HeadsModel, build_model
from labeler.train.heads.task import HeadsTask, load_checkpoint
from labeler.train.run_folder import library_versions

log = logging.getLogger(__name__)
RANDOM_INIT = "random-init (deterministic, seeded): NOT a trained backbone; for tests and demos only"


@dataclass(frozen=True)
class TrainResult:
    """What a train-heads run did; `history` is RUN/metrics.json, one record per epoch."""

    run_dir: Path
    history: list[EpochMetrics]
    weights: str
    n_train: int
    n_heldout: int
    main: bool  # False in the other ranks of a torchrun job: they print nothing


@dataclass(frozen=True)
class FinetuneResult(TrainResult):
    comparison: FinetuneComparison | None  # RUN/comparison.json; None in the other ranks of a torchrun job


# ------------------------------------------------------------------ train-heads


def _frozen_model(config: HeadsModelConfig, weights: str | None, seed: int) -> HeadsModel:
    from labeler.train.weights import load_backbone_weights

    model = build_model(config, seed=seed)
    if weights is not None:
        load_backbone_weights(model, weights, backbone=config.backbone)
    return model


def _head_groups(model: HeadsModel, lr: float) -> list[dict[str, Any]]:
    return [{"params": model.head_parameters(), "lr": lr, "name": "heads"}]


def weights_label(cfg: TrainHeadsConfig) -> tuple[str | None, str, str]:
    """(weights path or None, a label for records, their kind: dinov2 | depth-anything-v2 |
    foundation-stereo | random-init) — or a one-line WeightsError naming --weights."""
    from labeler.train.weights import classify, read_state_dict

    b = cfg.model.backbone
    # tiny has no released weights, but `adapt-backbone --backbone tiny` writes some: tiny takes --weights
    if (b == "tiny" and cfg.weights is None) or cfg.random_init:
        if cfg.weights is not None:
            raise WeightsError(f"--weights {cfg.weights} with --random-init: choose one")
        return None, f"{RANDOM_INIT} [--backbone {b}]", "random-init"
    if cfg.weights is None:
        raise WeightsError(
            f"no weights for --backbone {b}: pass --weights <checkpoint.pth> (DINOv2, Depth Anything "
            f"V2 or FoundationStereo, local file), or --random-init for a test run"
        )
    kind, _ = classify(read_state_dict(cfg.weights), cfg.weights)  # fails fast, before any worker starts
    return str(Path(cfg.weights).expanduser()), f"{kind}: {Path(cfg.weights).expanduser()}", kind


def with_dataset_classes(cfg: TrainHeadsConfig, ds: Any) -> TrainHeadsConfig:
    """The config with the dataset's class list in its model config (seg / fusion heads learn a class map
    then); one line when the config already names another class list."""
    classes = ds.manifest.classes if cfg.model.task != "depth" else None
    if cfg.model.classes is not None and cfg.model.classes != classes:
        raise LabelerError(
            f"{cfg.dataset}: its classes {list(classes) if classes else 'none (class-agnostic)'} differ from "
            f"the model's {list(cfg.model.classes)}; train on datasets of one class list"
        )
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"classes": classes})})


def train_heads(cfg: TrainHeadsConfig, *, stop_after_epoch: int | None = None) -> TrainResult:
    """Train the task's heads on a pseudo-label dataset with the ViT frozen; see labeler/train/engine.py."""
    from labeler import open_dataset
    from labeler.dataset.licences import parent_licences
    from labeler.io import sha256_file
    from labeler.train.sampling import rejected_note, run_split

    weights, label, kind = weights_label(cfg)
    sha = sha256_file(weights) if weights is not None else None
    ds = open_dataset(cfg.dataset)
    cfg = with_dataset_classes(cfg, ds)
    train_ids, held_ids, rejected = run_split(ds, cfg)
    if not train_ids:
        raise LabelerError(f"{cfg.dataset}: no ok samples to train on{rejected_note(rejected)}")
    record = {
        "command": "train-heads",
        "config": cfg.model_dump(mode="json"),
        "weights": label,
        "dataset_version": ds.version,
        "n_train": len(train_ids),
        "n_heldout": len(held_ids),
        "rejected_left_out": rejected,
        "versions": library_versions(),
    }
    task = HeadsTask(
        dataset=cfg.dataset,
        model_config=cfg.model,
        make_model=partial(_frozen_model, cfg.model, weights, cfg.seed),
        make_groups=partial(_head_groups, lr=cfg.lr),
        loss_weights=LossWeights(cfg.depth_loss, cfg.seg_loss, cfg.depth_weight, cfg.seg_weight),
        instances=cfg.instances,
        augment=cfg.augment,
        previews=cfg.previews,
        seed=cfg.seed,
        include_rejected=cfg.include_rejected,
    )
    spec = EngineSpec(
        task=task,
        settings=cfg,
        record=record,
        train_ids=train_ids,
        heldout_ids=held_ids,
        title=f"train-heads {cfg.model.backbone} {cfg.model.task}: {cfg.out.name}",
        extra={"weights": label},
        licences=tuple(parent_licences(kind, weights, weights_sha256=sha)),
    )
    if weights is None and is_main_process():
        log.warning("%s", label)
    history = launch(spec, stop_after_epoch=stop_after_epoch)
    return TrainResult(cfg.out, history, label, len(train_ids), len(held_ids), is_main_process())


# ------------------------------------------------------------------ finetune


def _finetuned_model(checkpoint: str, unfreeze_last: int) -> HeadsModel:
    ck = load_checkpoint(Path(checkpoint))
    model = build_model(HeadsModelConfig.model_validate(ck["model_config"]))
    model.load_state_dict(ck["model"], strict=True)
    model.unfreeze_last_blocks(unfreeze_last)
    return model


def llrd_groups(model: HeadsModel, *, lr: float, layer_decay: float, head_lr: float) -> list[dict[str, Any]]:
    """Heads at head_lr; the last block (with the final norm) at lr, each earlier one x layer_decay."""
    groups: list[dict[str, Any]] = [{"params": model.head_parameters(), "lr": head_lr, "name": "heads"}]
    blocks = model.pretrained.blocks
    for depth, i in enumerate(range(len(blocks) - 1, -1, -1)):
        params = [p for p in blocks[i].parameters() if p.requires_grad]
        if not params:
            break
        if depth == 0:
            params += [p for p in model.pretrained.norm.parameters() if p.requires_grad]
        groups.append({"params": params, "lr": lr * layer_decay**depth, "name": f"block{i}"})
    return groups


def _frozen_run(run: Path) -> tuple[dict[str, Any], TrainHeadsConfig, dict[str, list[str]]]:
    """The train-heads run a finetune continues: its config.json record, its config and its split."""
    if not ((run / "checkpoints" / "best.pt").is_file() and (run / "config.json").is_file()):
        raise LabelerError(
            f"{run}: not a train-heads run (no checkpoints/best.pt + config.json); "
            f"run `labeler train-heads ... --out {run}` first"
        )
    try:
        rec = json.loads((run / "config.json").read_text())
        split = json.loads((run / "split.json").read_text())
        return rec, TrainHeadsConfig.model_validate(rec["config"]), split
    except (OSError, ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON, bad config fields
        first = (str(err).splitlines() or [""])[0][:160]
        raise LabelerError(
            f"{run}: config.json or split.json is damaged ({type(err).__name__}: {first}); "
            "train the run again (labeler train-heads)"
        ) from None


def _finetune_task(
    cfg: FinetuneConfig, base_cfg: TrainHeadsConfig, base: Path, *, rescore: bool
) -> HeadsTask:
    """The frozen run's task from its best checkpoint `base`, its last blocks trainable (layer-wise rates);
    `rescore`: score `base` on the held-out set first (initial.json)."""
    head_lr = cfg.head_lr if cfg.head_lr is not None else 10 * cfg.lr
    return HeadsTask(
        dataset=base_cfg.dataset,
        model_config=base_cfg.model,
        make_model=partial(_finetuned_model, str(base), cfg.unfreeze_last),
        make_groups=partial(llrd_groups, lr=cfg.lr, layer_decay=cfg.layer_decay, head_lr=head_lr),
        loss_weights=LossWeights(
            base_cfg.depth_loss, base_cfg.seg_loss, base_cfg.depth_weight, base_cfg.seg_weight
        ),
        instances=base_cfg.instances,
        augment=base_cfg.augment,
        previews=base_cfg.previews,
        seed=base_cfg.seed,
        include_rejected=cfg.include_rejected,
        evaluate_initial=rescore,
    )


def _frozen_parents(run: Path) -> tuple[ModelLicence, ...]:
    """The frozen run's parent weights' licences (its RUN/licences.json but the training data's, which
    the finetune's record adds again); none for a run from before licences were recorded."""
    from data_schema.licences import LicenceRecord
    from labeler.dataset.licences import PARENT

    path = run / "licences.json"
    if not path.is_file():
        return ()
    models = LicenceRecord.model_validate_json(path.read_text()).models
    return tuple(m for m in models if m.role.startswith(PARENT))


def finetune(cfg: FinetuneConfig, *, stop_after_epoch: int | None = None) -> FinetuneResult:
    """Continue a train-heads run with its last N ViT blocks trainable; records held-out metrics against the
    frozen run's best epoch (the checkpoint it starts from) in OUT/comparison.json."""
    from labeler import open_dataset
    from labeler.train.sampling import reviewed_split

    rec, base_cfg, split = _frozen_run(cfg.run)
    base = cfg.run / "checkpoints" / "best.pt"
    # The decisions in force now count, also those made after the frozen run (train, review, finetune).
    train_ids, held_ids, rejected = reviewed_split(
        open_dataset(base_cfg.dataset),
        split["train"],
        split["heldout"],
        include_rejected=cfg.include_rejected,
    )
    # The frozen run scored another held-out set: score its best epoch again on this one (initial.json),
    # so that the comparison is on the same samples.
    rescore = held_ids != split["heldout"]
    frozen = load_checkpoint(base)
    out = cfg.out_dir
    record = {
        "command": "finetune",
        "config": cfg.model_dump(mode="json"),
        "base_run": str(cfg.run),
        "base_epoch": frozen["epoch"],
        "weights": rec.get("weights"),
        "dataset_version": rec.get("dataset_version"),
        "n_train": len(train_ids),
        "n_heldout": len(held_ids),
        "rejected_left_out": rejected,
        "versions": library_versions(),
    }
    task = _finetune_task(cfg, base_cfg, base, rescore=rescore)
    # the frozen run's settings (data, seed, schedule), but for those the finetune's flags set
    settings = {"out": out, "epochs": cfg.epochs, "gpus": cfg.gpus, "resume": cfg.resume}
    if cfg.batch_size is not None:
        settings["batch_size"] = cfg.batch_size
    if cfg.workers is not None:
        settings["workers"] = cfg.workers
    spec = EngineSpec(
        task=task,
        settings=base_cfg.model_copy(update=settings),
        record=record,
        train_ids=train_ids,
        heldout_ids=held_ids,
        title=f"finetune last {cfg.unfreeze_last} blocks of {cfg.run.name}",
        extra={"weights": rec.get("weights"), "base_run": str(cfg.run)},
        licences=_frozen_parents(cfg.run),
    )

    def compare(end: Finished) -> FinetuneComparison:
        # before: the frozen run's best epoch, scored again on this held-out set when it changed (the
        # record's defaults when a review rejected the whole held-out set); after: the last epoch
        before = end.before if rescore else EpochMetrics.model_validate(frozen["metrics"]).heldout
        after = end.history[-1].heldout
        return FinetuneComparison(
            base_run=str(cfg.run),
            base_epoch=frozen["epoch"],
            finetune_epochs=len(end.history),
            frozen=before,
            finetuned=after,
            change=after.change_from(before),
        )

    # The figures a run has not (None) are left out, as they always were in comparison.json.
    history, comparison = train_and_summarise(
        spec, compare, out / "comparison.json", exclude_none=True, stop_after_epoch=stop_after_epoch
    )
    weights = str(rec.get("weights"))
    return FinetuneResult(out, history, weights, len(train_ids), len(held_ids), is_main_process(), comparison)
