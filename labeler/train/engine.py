"""The one training engine of every labeler trainer (train-heads, finetune, train-stereo, ...).

A trainer is a `Task` (labeler/train/task.py): what the data, the model, its parameter groups, the forward
pass, the loss, the held-out evaluation and the typed per-epoch record are. The engine does the rest, the
same way for all:

- launch: one process (CPU or one GPU), one process per GPU (`mp.spawn`, DDP over NCCL), or under
  torchrun (any number of nodes; gloo on CPUs);
- seeded data order (`EpochSampler`: (seed, epoch) permutation; items keyed by (epoch, i), so a resumed
  run draws exactly what an uninterrupted one would), bf16 autocast on CUDA;
- AdamW over the task's parameter groups (each group its own learning rate: layer-wise rates are groups),
  linear warm-up then cosine, gradient clipping;
- a checkpoint every epoch (`checkpoints/last.pt`: model, optimiser, schedule, history, steps) and exact
  resume; the best epoch by the task's held-out score, saved the task's way;
- the run folder: config.json (the command's record, compared on --resume), split.json (train / held-out
  sample ids), metrics.csv + metrics.json (one typed record per epoch), steps.csv, curves.png,
  previews/epoch_NNN.png, and, for tasks that ask, initial.json (held-out figures before any step).

The run settings (epochs, batch size, seed, workers, ...) are the trainer's command config, a
`TrainRunConfig` (data_schema/train.py); the run folder's files are kept by labeler/train/run_folder.py.

Adding a trainer: a frozen, picklable dataclass with the `Task` members (labeler/train/*/task.py), its
typed records in data_schema/ (its command config a `TrainRunConfig`), and an api function that checks its
inputs (one line each), splits the dataset by sample id (`sampling.split_ids`), writes nothing itself but
builds the config.json record and an `EngineSpec`, and calls `launch`, or `train_and_summarise` for a run
that ends in a summary of its best epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from data_schema.licences import LicenceRecord, ModelLicence
from data_schema.record import Record
from data_schema.train import TrainRunConfig
from labeler.errors import LabelerError
from labeler.io import write_text_atomic
from labeler.train.dist import Dist, _env_dist, _free_port, is_main_process
from labeler.train.run_folder import (
    check_resume,
    check_run_dir,
    initial_figures,
    load_checkpoint,
    save_checkpoint,
    start_run_folder,
)
from labeler.train.task import Task, TrainTerms

log = logging.getLogger(__name__)
S = TypeVar("S", bound=Record)


@dataclass(frozen=True)
class EngineSpec:
    """A run: the task, the trainer's settings and what its run folder records.

    Args:
        task: what is trained (see `Task`).
        settings: the trainer's command config; the engine reads the run settings every trainer shares
            (`TrainRunConfig`): out (the run folder), dataset (for messages), epochs, batch_size, workers,
            seed, amp, warmup_frac, weight_decay, resume, gpus.
        record: config.json (the command's config and what was resolved); compared on --resume.
        train_ids, heldout_ids: the split by sample id (split.json).
        title: of curves.png.
        clip_grad_norm: largest gradient norm over all trainable parameters.
        extra: plain fields stored in checkpoints (weights label, base run, ...).
        licences: the licences of the weights the run starts from (RUN/licences.json).
    """

    task: Task
    settings: TrainRunConfig
    record: dict[str, Any]
    train_ids: list[str]
    heldout_ids: list[str]
    title: str = "run"
    clip_grad_norm: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    licences: tuple[ModelLicence, ...] = ()  # the parent weights' (RUN/licences.json adds the dataset's)

    @property
    def run_dir(self) -> Path:
        return self.settings.out


def warmup_cosine(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """lr factor: linear from ~0 to 1 over the warm-up steps, then cosine to 0 at `total_steps`."""
    warm = int(warmup_frac * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def loader(ds, sampler, settings: TrainRunConfig, dist: Dist):
    """Workers persist across epochs: the sampler runs in this process, so its (epoch, i) keys stay right."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=settings.batch_size,
        sampler=sampler,
        num_workers=settings.workers,
        pin_memory=dist.device.type == "cuda",
        persistent_workers=settings.workers > 0,
    )


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU training stays float32), but inside the tests'
    `labeler.models.precision.cpu_autocast()`, which runs the same body under CPU bf16 autocast."""
    from labeler.models.precision import autocast as autocast_on

    return autocast_on(device, enabled)


@dataclass
class _Training:
    """One process's training state: what it steps, and what checkpoints/last.pt keeps."""

    model: torch.nn.Module
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    trainable: list[torch.nn.Parameter]
    history: list[Any] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0  # epochs trained
    best: float = math.inf  # the best epoch's score so far
    net: torch.nn.Module = field(init=False)  # what steps: the model, DDP-wrapped by `parallel`

    def __post_init__(self) -> None:
        self.net = self.model

    def parallel(self, dist: Dist) -> None:
        if dist.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
            )

    def resume(self, spec: EngineSpec, last: Path) -> None:
        ck = load_checkpoint(last, spec.task.checkpoint_format, "training")
        check_resume(ck["record"], spec.record, spec.run_dir)
        self.model.load_state_dict(ck["model"])
        self.optim.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.done, self.steps, self.best = ck["epoch"], ck["steps"], ck["best"]
        self.history = [spec.task.record_type.model_validate(h) for h in ck["history"]]


def _training(spec: EngineSpec, dist: Dist, steps_per_epoch: int) -> _Training:
    """The task's model on the device, AdamW over its parameter groups, warm-up then cosine (not yet
    DDP-wrapped: a resumed run loads its checkpoint first)."""
    s = spec.settings
    model = spec.task.build_model().to(dist.device)
    groups = spec.task.param_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, warmup_cosine(s.epochs * steps_per_epoch, s.warmup_frac))
    return _Training(model, optim, sched, [p for g in groups for p in g["params"]])


def fit(spec: EngineSpec, dist: Dist | None = None, *, stop_after_epoch: int | None = None) -> list[Any]:
    """Train; returns the per-epoch history (also in RUN/metrics.json).

    Args:
        spec: what to train and where.
        dist: rank/world/device (default: one process on CPU).
        stop_after_epoch: return after this epoch's checkpoint (simulates an interruption in tests).
    """
    from labeler.train.report import figures_line, write_previews
    from labeler.train.sampling import EpochSampler

    dist = dist or Dist()
    task, s, run = spec.task, spec.settings, spec.run_dir
    last = run / "checkpoints" / "last.pt"
    resumed = s.resume and last.is_file()
    check_run_dir(run, resume=s.resume)
    if not spec.train_ids:
        raise LabelerError(f"{s.dataset}: no training samples (held-out split took them all)")
    start_run_folder(run, spec.record, spec.train_ids, spec.heldout_ids, resumed=resumed, main=dist.main)
    if dist.main:
        write_text_atomic(run / "licences.json", run_licences(spec).model_dump_json(indent=1))
    train_ds, held_ds = task.datasets(spec.train_ids, spec.heldout_ids)
    sampler = EpochSampler(len(train_ds), seed=s.seed, rank=dist.rank, world=dist.world)
    train_loader = loader(train_ds, sampler, s, dist)
    held_loader = None
    if held_ds is not None and dist.main:
        held_loader = loader(held_ds, EpochSampler(len(held_ds), seed=s.seed, shuffle=False), s, dist)
    t = _training(spec, dist, math.ceil(len(sampler) / s.batch_size))
    if resumed:
        t.resume(spec, last)
        if dist.main:
            log.info("%s: resumed after epoch %d", run, t.done)
    elif task.evaluate_initial and held_loader is not None:
        initial, rows = task.evaluate(t.model, held_loader, dist.device, amp=s.amp, epoch=0)
        write_text_atomic(run / "initial.json", initial.model_dump_json(indent=1))
        write_previews(run / "previews" / "epoch_000.png", rows)
        log.info("%s before training: %s", run.name, figures_line(initial))
    t.parallel(dist)
    task.train_mode(t.model)
    for epoch in range(t.done, s.epochs):
        sampler.set_epoch(epoch)
        train = _train_epoch(spec, t, train_loader, dist, epoch)
        heldout: Record = task.heldout_type()
        preview_rows: list[np.ndarray] = []
        if dist.main and held_loader is not None:
            heldout, preview_rows = task.evaluate(
                t.model, held_loader, dist.device, amp=s.amp, epoch=epoch + 1
            )
            task.train_mode(t.model)
        row = task.epoch_record(train, heldout)
        t.history.append(row)
        if dist.main:
            _keep_epoch(spec, t, row, epoch + 1)
            write_previews(run / "previews" / f"epoch_{epoch + 1:03d}.png", preview_rows)
            log.info("%s epoch %d/%d: %s", run.name, epoch + 1, s.epochs, figures_line(row))
        if dist.world > 1:
            torch.distributed.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return t.history


def _train_epoch(spec: EngineSpec, t: _Training, batches: Any, dist: Dist, epoch: int) -> TrainTerms:
    """One epoch's optimiser steps (each appended to `t.steps`); their means over every rank's batches."""
    task, amp = spec.task, spec.settings.amp
    keys = ("loss", *task.loss_terms)
    t0, seen, n_batches = time.perf_counter(), 0, 0
    sums = dict.fromkeys(keys, 0.0)
    for batch in batches:
        b = task.prepare(batch, dist.device)
        with autocast(dist.device, amp):
            out = task.forward(t.net, b)
        terms = task.loss(out, b)
        t.optim.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(t.trainable, spec.clip_grad_norm)
        t.optim.step()
        t.sched.step()
        vals = {k: float(v.detach()) for k, v in terms.items()}
        for k, v in vals.items():
            sums[k] += v
        n_batches += 1
        seen += _batch_len(b) * dist.world
        t.steps.append(
            {"step": len(t.steps) + 1, "epoch": epoch + 1, **vals, "lr": t.optim.param_groups[0]["lr"]}
        )
    seconds = time.perf_counter() - t0
    if dist.world > 1:  # epoch means over every rank's batches
        total = torch.tensor([*sums.values(), n_batches], dtype=torch.float64, device=dist.device)
        torch.distributed.all_reduce(total)
        sums, n_batches = {k: float(v) for k, v in zip(keys, total[:-1], strict=True)}, int(total[-1])
    return TrainTerms(
        epoch=epoch + 1,
        loss=sums["loss"] / max(n_batches, 1),
        lr=t.optim.param_groups[0]["lr"],
        seconds=seconds,
        samples_per_s=seen / max(seconds, 1e-9),
        terms={k: sums[k] / max(n_batches, 1) for k in task.loss_terms if k in t.steps[-1]},
    )


def _keep_epoch(spec: EngineSpec, t: _Training, row: Record, epoch: int) -> None:
    """Main process, after an epoch: the best model saved the task's way when this epoch is the best so
    far, checkpoints/last.pt, metrics, curves."""
    from labeler.train.report import write_curves, write_metrics

    task = spec.task
    # metrics and history go in as plain dicts: a pickled record would tie every checkpoint to the class's
    # import path
    payload = {
        "format": task.checkpoint_format,
        **task.checkpoint_fields(),
        "model": t.model.state_dict(),
        "epoch": epoch,
        "metrics": row.model_dump(exclude_none=True),
        **spec.extra,
    }
    score = task.score(row)
    if not score >= t.best:  # also true for the first finite score
        t.best = score
        task.save_best(spec.run_dir, t.model, payload, step=len(t.steps))
    save_checkpoint(
        spec.run_dir / "checkpoints" / "last.pt",
        {
            **payload,
            "optimizer": t.optim.state_dict(),
            "scheduler": t.sched.state_dict(),
            "history": [h.model_dump(exclude_none=True) for h in t.history],
            "steps": t.steps,
            "best": t.best,
            "record": spec.record,
        },
    )
    write_metrics(
        spec.run_dir, t.history, t.steps, epoch_columns=task.epoch_columns, step_columns=task.step_columns
    )
    write_curves(spec.run_dir / "curves.png", t.history, t.steps, title=spec.title, panels=task.curve_panels)


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


# ------------------------------------------------------------------ processes


def spawn_processes(spec: EngineSpec, devices: list[torch.device]) -> list[Any]:
    """One process per device (`torch.multiprocessing.spawn`), DDP over NCCL on GPUs (`--gpu 0,1`) or gloo
    on CPU devices (the same code, which is how the tests run it); the history rank 0 wrote."""
    import torch.multiprocessing as mp

    mp.spawn(_spawned, args=(spec, devices, _free_port()), nprocs=len(devices), join=True)
    rows = json.loads((spec.run_dir / "metrics.json").read_text())
    return [spec.task.record_type.model_validate(h) for h in rows]


def _spawned(rank: int, spec: EngineSpec, devices: list[torch.device], port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")  # spawn starts unconfigured
    cuda = devices[rank].type == "cuda"
    if cuda:
        torch.cuda.set_device(devices[rank])
    torch.distributed.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(devices)
    )
    try:
        fit(spec, Dist(rank, len(devices), devices[rank]))
    finally:
        torch.distributed.destroy_process_group()


def run_licences(spec: EngineSpec) -> LicenceRecord:
    """RUN/licences.json: the parent weights' licences, then every model in the training data's history."""
    from data_schema.licences import inherited
    from labeler.dataset.licences import dataset_licences

    return LicenceRecord(
        models=[
            *spec.licences,
            *inherited(dataset_licences(spec.settings.dataset), role_prefix="training data"),
        ]
    )


def launch(spec: EngineSpec, *, stop_after_epoch: int | None = None) -> list[Any]:
    """Run `fit` on the CPU, one GPU, one process per GPU (`mp.spawn`, DDP over NCCL), or under torchrun:
    the settings' `gpus`."""
    check_run_dir(spec.run_dir, resume=spec.settings.resume)
    gpus = spec.settings.gpus
    env = _env_dist()
    if env is not None:
        try:
            return fit(spec, env, stop_after_epoch=stop_after_epoch)
        finally:
            torch.distributed.destroy_process_group()
    if gpus and not torch.cuda.is_available():
        raise LabelerError(
            f"--gpu {','.join(map(str, gpus))}: CUDA is not available on this machine; "
            f"leave --gpu out to train on the CPU"
        )
    if len(gpus) > 1:
        return spawn_processes(spec, [torch.device(f"cuda:{g}") for g in gpus])
    device = torch.device(f"cuda:{gpus[0]}") if gpus else torch.device("cpu")
    return fit(spec, Dist(device=device), stop_after_epoch=stop_after_epoch)


# ------------------------------------------------------------------ the end of a run


@dataclass(frozen=True)
class Finished:
    """A run that trained all its epochs, as its summary sees it."""

    history: list[Any]
    best: Any  # the epoch saved as best (`best_epoch`)
    before: Any  # held-out figures before any step: initial.json, or the task's held-out record's defaults


def best_epoch(history: Sequence[Any], score: Callable[[Any], float]) -> Any:
    """The epoch `fit` saved as best: the first with the lowest score (`not s >= best`, as there)."""
    best, row = math.inf, history[0]
    for h in history:
        s = score(h)
        if not s >= best:
            best, row = s, h
    return row


def train_and_summarise(
    spec: EngineSpec,
    summarise: Callable[[Finished], S | None],
    path: Path,
    *,
    all_ranks: bool = False,
    exclude_none: bool = False,
    stop_after_epoch: int | None = None,
) -> tuple[list[Any], S | None]:
    """Launch the run; once it has trained all its epochs, its summary record, written to `path`.

    Args:
        summarise: the summary of the finished run, called on the main process (None: no summary).
        path: where the main process writes the summary (JSON; figures that are None left out with
            `exclude_none`).
        all_ranks: call `summarise` on every process, for a summary that trains more data-parallel
            (adapt-backbone's probes); the main process's result is the one written.
        stop_after_epoch: see `fit` (an interrupted run has no summary).

    Returns:
        The per-epoch history and the summary (None in the other processes, or when there is none).
    """
    history = launch(spec, stop_after_epoch=stop_after_epoch)
    main = is_main_process()
    if len(history) < spec.settings.epochs or not (main or all_ranks):
        return history, None
    before = initial_figures(spec.run_dir, spec.task.heldout_type)
    summary = summarise(Finished(history, best_epoch(history, spec.task.score), before))
    if summary is None or not main:
        return history, None
    write_text_atomic(path, summary.model_dump_json(indent=1, exclude_none=exclude_none))
    return history, summary
