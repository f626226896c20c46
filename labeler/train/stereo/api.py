"""`train_stereo`: fine-tune FoundationStereo on a rig's own pseudo-label dataset (the stereo task on the
engine), checking its inputs first so that each bad one is a single line naming the flag or file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.licences import model_licence
from data_schema.manifest import Manifest
from data_schema.stereo_train import (
    StereoEpochMetrics,
    StereoRunSummary,
    TrainStereoConfig,
)
from labeler.errors import LabelerError

log = logging.getLogger(__name__)
SIZE_KEY = "labeler_image_size"  # cfg.yaml of a train-stereo checkpoint: [width, height] it was tuned on


@dataclass(frozen=True)
class StereoTrainResult:
    """What a train-stereo run did; `summary` is OUT/summary.json (None in the other ranks of a DDP job)."""

    run_dir: Path
    history: list[StereoEpochMetrics]
    summary: StereoRunSummary | None
    n_train: int
    n_heldout: int
    main: bool


def _teacher(manifest: Manifest) -> str:
    stereo = manifest.stereo
    weights = getattr(stereo, "weights", None)
    return f"{stereo.name}" + (f" ({weights})" if weights is not None else "")


def _image_size(manifest: Manifest) -> tuple[int, int]:
    w, h = manifest.calibration.image_size
    return int(w), int(h)


def check_inputs(cfg: TrainStereoConfig) -> tuple[Any, dict[str, Any], int, int]:
    """(dataset reader, parent cfg.yaml mapping, max_disp, valid_iters) — or one LabelerError line."""
    import yaml

    from labeler import open_dataset
    from labeler.models.foundation_stereo.loader import load_foundation_stereo
    from labeler.models.foundation_stereo.release import find_release, read_release_config
    from labeler.train.stereo.task import freeze_problem

    files = find_release(cfg.stereo_weights)  # missing checkpoint or cfg.yaml: one line naming the file
    args = read_release_config(files.cfg)
    parent_cfg = dict(yaml.safe_load(files.cfg.read_text()))
    ds = open_dataset(cfg.dataset)
    if len(ds) == 0:
        raise LabelerError(f"{cfg.dataset}: no ok samples to train on")
    w, h = _image_size(ds.manifest)
    ch, cw = cfg.crop
    if ch > h or cw > w:
        raise LabelerError(
            f"--crop {ch}x{cw} is larger than the images of {cfg.dataset} ({h}x{w}, height x width); "
            f"pass --crop of at most {h - h % 32}x{w - w % 32} (multiples of 32)"
        )
    tuned = parent_cfg.get(SIZE_KEY)
    if tuned is not None and tuple(tuned) != (w, h) and not cfg.allow_other_size:
        raise LabelerError(
            f"{files.cfg}: the checkpoint was fine-tuned on {tuned[0]}x{tuned[1]} images, {cfg.dataset} has "
            f"{w}x{h}; start from the release checkpoint or pass --allow-other-size"
        )
    _check_confidence(ds, cfg.dataset)
    model = load_foundation_stereo(files.weights, max_disp=cfg.max_disp)  # keys and shapes, strictly
    problem = freeze_problem(model, cfg.freeze)
    if problem:
        raise LabelerError(problem)
    del model
    max_disp = cfg.max_disp or args.max_disp
    return ds, parent_cfg, max_disp, cfg.valid_iters or args.valid_iters


def _check_confidence(ds: Any, path: Path) -> None:
    """The distillation weighs pixels by the stereo confidence: a dataset without it cannot teach."""
    for i in range(min(len(ds), 3)):
        a = ds.read(i, ("disparity_px", "confidence"))
        valid = np.isfinite(a["disparity_px"])
        if valid.any() and np.isfinite(a["confidence"][valid]).any():
            return
    raise LabelerError(
        f"{path}: made without stereo confidence (no finite confidence where the disparity is valid); "
        f"relabel it with a stereo backend that writes one (sgbm, foundation-stereo)"
    )


def train_stereo(cfg: TrainStereoConfig, *, stop_after_epoch: int | None = None) -> StereoTrainResult:
    """Fine-tune the `--stereo-weights` model on `cfg.dataset`; see labeler/train/stereo/task.py."""
    from labeler.io import sha256_file
    from labeler.models.foundation_stereo.release import CHECKPOINT_NAME, find_release
    from labeler.train.dist import is_main_process
    from labeler.train.engine import EngineSpec, Finished, train_and_summarise
    from labeler.train.run_folder import library_versions
    from labeler.train.sampling import rejected_note, run_split
    from labeler.train.stereo.task import StereoTask
    from labeler.train.stereo.truth import truth_source

    ds, parent_cfg, max_disp, valid_iters = check_inputs(cfg)
    files = find_release(cfg.stereo_weights)
    truth = truth_source(cfg.truth, ds.manifest.calibration)
    train_ids, held_ids, rejected = run_split(ds, cfg)
    if not train_ids:
        raise LabelerError(f"{cfg.dataset}: no ok samples to train on{rejected_note(rejected)}")
    parent_sha = sha256_file(files.weights)
    size = _image_size(ds.manifest)
    record = {
        "command": "train-stereo",
        "config": cfg.model_dump(mode="json"),
        "parent_weights": str(files.weights),
        "parent_sha256": parent_sha,
        "dataset_version": ds.version,
        "teacher": _teacher(ds.manifest),
        "image_size": list(size),
        "max_disp": max_disp,
        "valid_iters": valid_iters,
        "n_train": len(train_ids),
        "n_heldout": len(held_ids),
        "rejected_left_out": rejected,
        "versions": library_versions(),
    }
    release_cfg = {
        **parent_cfg,
        SIZE_KEY: list(size),
        "labeler_parent_sha256": parent_sha,
        "labeler_dataset_version": ds.version,
        # the parent's max_disp above stays the one loaders run at (the official demo, --stereo-weights
        # without --max-disp): a range trained at a smaller --max-disp still extends to the parent's
        "labeler_train_max_disp": max_disp,
    }
    task = StereoTask(
        cfg=cfg,
        weights=files.weights,
        max_disp=max_disp,
        valid_iters=valid_iters,
        release_cfg=release_cfg,
        truth=truth,
    )
    spec = EngineSpec(
        task=task,
        settings=cfg,
        record=record,
        train_ids=train_ids,
        heldout_ids=held_ids,
        title=f"train-stereo {files.weights.parent.name} on {cfg.dataset.name}: {cfg.out.name}",
        extra={"parent_sha256": parent_sha, "dataset_version": ds.version},
        licences=(
            model_licence("parent weights", "foundation-stereo", files.weights, weights_sha256=parent_sha),
        ),
    )

    def summarise(end: Finished) -> StereoRunSummary:
        weights = cfg.out / CHECKPOINT_NAME
        return StereoRunSummary(
            parent_weights=str(files.weights),
            parent_sha256=parent_sha,
            dataset=str(cfg.dataset),
            dataset_version=ds.version,
            teacher=_teacher(ds.manifest),
            image_size=size,
            weights=str(weights),
            weights_sha256=sha256_file(weights),
            best_epoch=end.best.epoch,
            epochs=len(end.history),
            before=end.before,
            after=end.best.heldout,
            change=end.best.heldout.change_from(end.before),
        )

    history, summary = train_and_summarise(
        spec, summarise, cfg.out / "summary.json", stop_after_epoch=stop_after_epoch
    )
    return StereoTrainResult(cfg.out, history, summary, len(train_ids), len(held_ids), is_main_process())
