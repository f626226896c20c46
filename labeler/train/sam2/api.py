"""`train_sam2`: retrain SAM2 on a dataset's masks (the SAM2 task on the engine), checking its inputs first so
that each bad one is a single line naming the flag or file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_schema.licences import model_licence
from data_schema.sam2_train import Sam2EpochMetrics, Sam2RunSummary, TrainSam2Config
from labeler.errors import LabelerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sam2TrainResult:
    """What a train-sam2 run did; `summary` is OUT/summary.json (None in the other ranks of a DDP job)."""

    run_dir: Path
    history: list[Sam2EpochMetrics]
    summary: Sam2RunSummary | None
    n_train: int
    n_heldout: int
    main: bool


@dataclass(frozen=True)
class CheckedInputs:
    reader: Any
    config_path: Path
    checkpoint: Path
    image_size: int
    targets: Any  # labeler.train.sam2.data.TargetObjects
    sample_ids: list[str]  # the dataset's, or those of --selection


def check_inputs(cfg: TrainSam2Config) -> CheckedInputs:
    """The dataset reader, the config file, the model's input size and the target objects — or one
    LabelerError line naming the flag."""
    from labeler import open_dataset
    from labeler.segment.sam2_model import CONFIG_FLAG, check_checkpoint, load_sam2, resolve_config
    from labeler.train.sam2.data import target_objects
    from labeler.train.sampling import selected_ids

    config_path = resolve_config(cfg.sam2_config)  # unknown name or missing YAML: one line
    checkpoint = check_checkpoint(cfg.sam2_checkpoint, cfg.sam2_config)
    reader = open_dataset(cfg.dataset)
    if len(reader) == 0:
        raise LabelerError(f"{cfg.dataset}: no ok samples to train on")
    sample_ids = selected_ids(reader, cfg.selection)
    targets = target_objects(
        reader,
        sample_ids,
        min_score=cfg.min_score,
        min_area=cfg.min_area,
        include_rejected=cfg.include_rejected,
    )
    if targets.kept == 0:
        raise LabelerError(
            f"{cfg.dataset}: no objects to train on ({targets.describe()}); lower --min-score or --min-area, "
            f"or label the dataset with a mask backend (--masks)"
        )
    sam = load_sam2(str(config_path), checkpoint)  # keys and shapes, strictly: one line
    if not getattr(sam, "directly_add_no_mem_embed", False):
        raise LabelerError(
            f"{CONFIG_FLAG} {cfg.sam2_config}: the config sets directly_add_no_mem_embed false; train-sam2 "
            f"trains the image path of configs that add no_mem_embed directly, as every release does"
        )
    return CheckedInputs(reader, config_path, checkpoint, int(sam.image_size), targets, sample_ids)


def train_sam2(cfg: TrainSam2Config, *, stop_after_epoch: int | None = None) -> Sam2TrainResult:
    """Retrain the `--sam2-checkpoint` model on `cfg.dataset`'s masks; see labeler/train/sam2/task.py."""
    from labeler.io import sha256_file
    from labeler.train.dist import is_main_process
    from labeler.train.engine import EngineSpec, Finished, train_and_summarise
    from labeler.train.run_folder import library_versions
    from labeler.train.sam2.task import CHECKPOINT_NAME, Sam2Task
    from labeler.train.sampling import split_ids

    checked = check_inputs(cfg)
    reader, targets = checked.reader, checked.targets
    train_ids, held_ids = split_ids(checked.sample_ids, cfg.heldout_frac, seed=cfg.seed)
    train_ids = [s for s in train_ids if targets.ids.get(s)]
    held_ids = [s for s in held_ids if targets.ids.get(s)]
    if not train_ids:
        raise LabelerError(
            f"{cfg.dataset}: no training image has an object to train on (the held-out split took them); "
            f"lower --heldout-frac"
        )
    n_train_objects = sum(len(targets.ids[s]) for s in train_ids)
    parent_sha = sha256_file(checked.checkpoint)
    record = {
        "command": "train-sam2",
        "config": cfg.model_dump(mode="json"),
        "parent_checkpoint": str(cfg.sam2_checkpoint),
        "parent_sha256": parent_sha,
        "sam2_config_file": str(checked.config_path),
        "dataset_version": reader.version,
        "mask_backend": reader.manifest.masks.name,
        "image_size": checked.image_size,
        "objects": {
            "total": targets.total,
            "low_score": targets.low_score,
            "small": targets.small,
            "rejected": targets.rejected,
            "train": n_train_objects,
            "heldout": sum(len(targets.ids[s]) for s in held_ids),
        },
        "n_train": len(train_ids),
        "n_heldout": len(held_ids),
        "versions": library_versions("sam2"),
    }
    task = Sam2Task(
        cfg=cfg, config_path=checked.config_path, targets=targets.ids, image_size=checked.image_size
    )
    spec = EngineSpec(
        task=task,
        settings=cfg,
        record=record,
        train_ids=train_ids,
        heldout_ids=held_ids,
        title=f"train-sam2 {cfg.sam2_checkpoint.name} on {cfg.dataset.name}: {cfg.out.name}",
        extra={"parent_sha256": parent_sha, "dataset_version": reader.version},
        licences=(model_licence("parent weights", "sam2", cfg.sam2_checkpoint, weights_sha256=parent_sha),),
    )

    def summarise(end: Finished) -> Sam2RunSummary:
        weights = cfg.out / CHECKPOINT_NAME
        return Sam2RunSummary(
            parent_checkpoint=str(cfg.sam2_checkpoint),
            parent_sha256=parent_sha,
            sam2_config=cfg.sam2_config,
            dataset=str(cfg.dataset),
            dataset_version=reader.version,
            mask_backend=reader.manifest.masks.name,
            n_train_objects=n_train_objects,
            checkpoint=str(weights),
            checkpoint_sha256=sha256_file(weights),
            best_epoch=end.best.epoch,
            epochs=len(end.history),
            before=end.before,
            after=end.best.heldout,
            change=end.best.heldout.change_from(end.before),
        )

    history, summary = train_and_summarise(
        spec, summarise, cfg.out / "summary.json", stop_after_epoch=stop_after_epoch
    )
    return Sam2TrainResult(cfg.out, history, summary, len(train_ids), len(held_ids), is_main_process())
