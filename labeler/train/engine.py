"""The one training engine of every labeler trainer (train-heads, finetune, train-stereo, ...).

A trainer is a `Task`: what the data, the model, its parameter groups, the forward pass, the loss, the
held-out evaluation and the typed per-epoch record are. The engine does the rest, the same way for all:

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

Adding a trainer (train-sam2, adapt-backbone, ...): a frozen, picklable dataclass with the `Task` members
(heads_task.py and stereo_task.py are the two so far), its typed records in data_schema/, and an api
function that checks its inputs (one line each), splits the dataset by sample id (`data.split_ids`), writes
nothing itself but builds the config.json record and an `EngineSpec`, and calls `launch`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from data_schema.licences import LicenceRecord, ModelLicence
from data_schema.record import Record
from labeler.errors import LabelerError
from labeler.io import atomic_path, write_text_atomic
from labeler.train.dist import Dist, _env_dist, _free_port

log = logging.getLogger(__name__)
RESUME_MAY_DIFFER = ("resume", "workers", "gpus")


@dataclass(frozen=True)
class TrainTerms:
    """What the engine measured over one epoch's optimiser steps (means over every rank's batches)."""

    epoch: int
    loss: float
    lr: float  # of the first parameter group, at the epoch's end
    seconds: float
    samples_per_s: float
    terms: dict[str, float]  # the task's loss terms (unweighted), those its steps returned


class Items(Protocol):
    """A task's training or held-out items: item i of an epoch is `items[(epoch, i)]`."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]: ...


class Task(Protocol):
    """A trainer's definition. Instances are picklable (they travel to spawned GPU processes).

    Attributes:
        checkpoint_format: the `format` tag of its checkpoints.
        loss_terms: names of the loss terms `loss` returns beside "loss", in column order.
        record_type: its per-epoch record (a frozen pydantic Record with an `epoch` field).
        heldout_type: its held-out record (every field optional: the figures of a run without held-out).
        epoch_columns, step_columns: metrics.csv and steps.csv columns.
        curve_panels: curves.png panels after the loss one: (record fields, title) each.
        evaluate_initial: evaluate the model before the first step (RUN/initial.json).
    """

    # read-only: a task may set them as plain class attributes
    @property
    def checkpoint_format(self) -> str: ...
    @property
    def loss_terms(self) -> tuple[str, ...]: ...
    @property
    def record_type(self) -> type[Record]: ...
    @property
    def heldout_type(self) -> type[Record]: ...
    @property
    def epoch_columns(self) -> tuple[str, ...]: ...
    @property
    def step_columns(self) -> tuple[str, ...]: ...
    @property
    def curve_panels(self) -> tuple[tuple[tuple[str, ...], str], ...]: ...
    @property
    def evaluate_initial(self) -> bool: ...

    def datasets(self, train_ids: list[str], heldout_ids: list[str]) -> tuple[Items, Items | None]:
        """Training and held-out items, indexable by (epoch, i); None when nothing is held out."""
        ...

    def build_model(self) -> torch.nn.Module: ...

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """AdamW groups ("params", "lr", "name"): every trainable parameter in exactly one."""
        ...

    def train_mode(self, model: torch.nn.Module) -> None:
        """Put the model in training mode (e.g. with frozen normalisation statistics)."""
        ...

    def prepare(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """A collated batch on the device, ready for `forward`."""
        ...

    def forward(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """The model's outputs (runs under autocast)."""
        ...

    def loss(self, out: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss": the total to minimise, term: unweighted term, ...} (runs outside autocast)."""
        ...

    def evaluate(
        self, model: torch.nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[Record, list[np.ndarray]]:
        """Held-out record and preview rows (RGB uint8) of the model in eval mode."""
        ...

    def epoch_record(self, train: TrainTerms, heldout: Record) -> Record: ...

    def score(self, row: Any) -> float:
        """Lower is better; the best epoch's model is saved by `save_best`."""
        ...

    def checkpoint_fields(self) -> dict[str, Any]:
        """Plain fields stored in every checkpoint beside the weights (what rebuilds the model)."""
        ...

    def save_best(self, run_dir: Path, model: torch.nn.Module, payload: dict[str, Any], *, step: int) -> None:
        """Keep the best epoch's model (`payload`: the checkpoint fields; `step`: optimiser steps so far)."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    """A run: the task and how to train it.

    Args:
        run_dir: the run folder.
        task: what is trained (see `Task`).
        record: config.json (the command's config and what was resolved); compared on --resume.
        train_ids, heldout_ids: the split by sample id (split.json).
        dataset: the dataset folder, for messages.
        clip_grad_norm: largest gradient norm over all trainable parameters.
        extra: plain fields stored in checkpoints (weights label, base run, ...).
    """

    run_dir: Path
    task: Task
    record: dict[str, Any]
    train_ids: list[str]
    heldout_ids: list[str]
    dataset: Path
    epochs: int
    batch_size: int
    workers: int
    seed: int
    amp: bool
    warmup_frac: float
    weight_decay: float
    resume: bool
    clip_grad_norm: float = 1.0
    title: str = "run"
    extra: dict[str, Any] = field(default_factory=dict)
    licences: tuple[ModelLicence, ...] = ()  # the parent weights' (RUN/licences.json adds the dataset's)


class RunSettings(Protocol):
    """The fields every trainer's command config shares (TrainHeadsConfig, TrainStereoConfig, ...), read
    only (the configs are frozen)."""

    @property
    def out(self) -> Path: ...

    @property
    def dataset(self) -> Path: ...

    @property
    def epochs(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def workers(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def amp(self) -> bool: ...

    @property
    def warmup_frac(self) -> float: ...

    @property
    def weight_decay(self) -> float: ...

    @property
    def resume(self) -> bool: ...


def engine_spec(
    cfg: RunSettings,
    *,
    task: Task,
    record: dict[str, Any],
    train_ids: list[str],
    heldout_ids: list[str],
    title: str,
    extra: dict[str, Any],
    licences: tuple[ModelLicence, ...] = (),
) -> EngineSpec:
    """The EngineSpec of a trainer's command config: its shared run settings, and what is its own."""
    return EngineSpec(
        run_dir=cfg.out,
        task=task,
        record=record,
        train_ids=train_ids,
        heldout_ids=heldout_ids,
        dataset=cfg.dataset,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        seed=cfg.seed,
        amp=cfg.amp,
        warmup_frac=cfg.warmup_frac,
        weight_decay=cfg.weight_decay,
        resume=cfg.resume,
        title=title,
        extra=extra,
        licences=licences,
    )


R = TypeVar("R", bound=Record)


def initial_figures(run_dir: Path, figures: type[R]) -> R:
    """The held-out figures before any step (initial.json, written by the engine for tasks that ask), or
    the record's defaults when the run has none."""
    initial = run_dir / "initial.json"
    return figures.model_validate_json(initial.read_text()) if initial.is_file() else figures()


def warmup_cosine(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """lr factor: linear from ~0 to 1 over the warm-up steps, then cosine to 0 at `total_steps`."""
    warm = int(warmup_frac * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def _check_resume(saved: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    a, b = saved.get("config", {}), now.get("config", {})
    differ = sorted(k for k in set(a) | set(b) if k not in RESUME_MAY_DIFFER and a.get(k) != b.get(k))
    if differ:
        raise LabelerError(
            f"{run_dir}: --resume with different settings ({', '.join(differ)}); use the run's "
            f"settings (config.json) or a new --out"
        )


def _check_split(spec: EngineSpec) -> None:
    """A resumed run trains and scores the samples it started with: a split that changed since (samples
    added or removed, a review's rejections) would make the resumed run no longer the run it continues."""
    try:
        saved = json.loads((spec.run_dir / "split.json").read_text())
    except (OSError, ValueError):
        return  # a run from before split.json was kept: nothing to compare
    now = {"train": spec.train_ids, "heldout": spec.heldout_ids}
    changed = {k: set(saved.get(k, [])) ^ set(now[k]) for k in now}
    if any(changed.values()):
        n = sum(len(v) for v in changed.values())
        raise LabelerError(
            f"{spec.run_dir}: --resume with another train / held-out split ({n} sample(s) in or out since "
            "the run started: the dataset or its review decisions changed); start a new --out"
        )


def loader(ds, sampler, batch_size: int, workers: int, pin: bool):
    """Workers persist across epochs: the sampler runs in this process, so its (epoch, i) keys stay right."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def check_run_dir(spec: EngineSpec) -> None:
    if (spec.run_dir / "checkpoints" / "last.pt").is_file() and not spec.resume:
        raise LabelerError(
            f"{spec.run_dir}: already holds a run; pass --resume to continue it or choose a new --out"
        )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, fmt: str, what: str) -> dict[str, Any]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise LabelerError(f"{path}: not a labeler {what} checkpoint ({fmt})")
    return ck


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU training stays float32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def figures(row: Record) -> dict[str, float]:
    """Every figure of an epoch record (not None), the epoch number left out, in field order."""
    return {k: v for k, v in row.model_dump().items() if k != "epoch" and v is not None}


def _write_report(spec: EngineSpec, history: Sequence[Record], steps: Sequence[dict[str, Any]]) -> None:
    from labeler.train.report import write_curves, write_metrics

    t = spec.task
    write_metrics(spec.run_dir, history, steps, epoch_columns=t.epoch_columns, step_columns=t.step_columns)
    write_curves(spec.run_dir / "curves.png", history, steps, title=spec.title, panels=t.curve_panels)


def fit(spec: EngineSpec, dist: Dist | None = None, *, stop_after_epoch: int | None = None) -> list[Any]:
    """Train; returns the per-epoch history (also in RUN/metrics.json).

    Args:
        spec: what to train and where.
        dist: rank/world/device (default: one process on CPU).
        stop_after_epoch: return after this epoch's checkpoint (simulates an interruption in tests).
    """
    from labeler.train.report import write_previews
    from labeler.train.sampling import EpochSampler

    dist = dist or Dist()
    task = spec.task
    run, ckpt_dir = spec.run_dir, spec.run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    resumed = spec.resume and last.is_file()
    check_run_dir(spec)
    if not spec.train_ids:
        raise LabelerError(f"{spec.dataset}: no training samples (held-out split took them all)")
    if resumed:
        _check_split(spec)
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "config.json", json.dumps(spec.record, indent=1))
        write_text_atomic(
            run / "split.json", json.dumps({"train": spec.train_ids, "heldout": spec.heldout_ids}, indent=1)
        )
        write_text_atomic(run / "licences.json", run_licences(spec).model_dump_json(indent=1))
    train_ds, held_ds = task.datasets(spec.train_ids, spec.heldout_ids)
    sampler = EpochSampler(len(train_ds), seed=spec.seed, rank=dist.rank, world=dist.world)
    pin = dist.device.type == "cuda"
    train_loader = loader(train_ds, sampler, spec.batch_size, spec.workers, pin)
    held_loader = (
        loader(
            held_ds,
            EpochSampler(len(held_ds), seed=spec.seed, shuffle=False),
            spec.batch_size,
            spec.workers,
            pin,
        )
        if held_ds is not None and dist.main
        else None
    )

    model = task.build_model().to(dist.device)
    groups = task.param_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=spec.weight_decay)
    steps_per_epoch = math.ceil(len(sampler) / spec.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, warmup_cosine(spec.epochs * steps_per_epoch, spec.warmup_frac)
    )
    history: list[Any] = []
    steps: list[dict[str, Any]] = []
    start, best = 0, float("inf")
    if resumed:
        ck = load_checkpoint(last, task.checkpoint_format, "training")
        _check_resume(ck["record"], spec.record, run)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, steps, best = ck["epoch"], ck["steps"], ck["best"]
        history = [task.record_type.model_validate(h) for h in ck["history"]]
        if dist.main:
            log.info("%s: resumed after epoch %d", run, start)
    elif task.evaluate_initial and held_loader is not None:
        initial, rows = task.evaluate(model, held_loader, dist.device, amp=spec.amp, epoch=0)
        write_text_atomic(run / "initial.json", initial.model_dump_json(indent=1))
        write_previews(run / "previews" / "epoch_000.png", rows)
        log.info("%s before training: %s", run.name, _line(figures(initial)))
    net: torch.nn.Module = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    trainable = [p for g in groups for p in g["params"]]
    task.train_mode(model)
    keys = ("loss", *task.loss_terms)
    for epoch in range(start, spec.epochs):
        sampler.set_epoch(epoch)
        t0, seen, n_batches = time.perf_counter(), 0, 0
        sums = dict.fromkeys(keys, 0.0)
        for batch in train_loader:
            b = task.prepare(batch, dist.device)
            with autocast(dist.device, spec.amp):
                out = task.forward(net, b)
            terms = task.loss(out, b)
            optim.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(trainable, spec.clip_grad_norm)
            optim.step()
            sched.step()
            vals = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in vals.items():
                sums[k] += v
            n_batches += 1
            seen += _batch_len(b) * dist.world
            steps.append(
                {"step": len(steps) + 1, "epoch": epoch + 1, **vals, "lr": optim.param_groups[0]["lr"]}
            )
        seconds = time.perf_counter() - t0
        if dist.world > 1:  # epoch means over every rank's batches
            t = torch.tensor([*sums.values(), n_batches], dtype=torch.float64, device=dist.device)
            torch.distributed.all_reduce(t)
            sums, n_batches = {k: float(v) for k, v in zip(keys, t[:-1], strict=True)}, int(t[-1])
        train = TrainTerms(
            epoch=epoch + 1,
            loss=sums["loss"] / max(n_batches, 1),
            lr=optim.param_groups[0]["lr"],
            seconds=seconds,
            samples_per_s=seen / max(seconds, 1e-9),
            terms={k: sums[k] / max(n_batches, 1) for k in task.loss_terms if k in steps[-1]},
        )
        heldout: Record = task.heldout_type()
        preview_rows: list[np.ndarray] = []
        if dist.main and held_loader is not None:
            heldout, preview_rows = task.evaluate(
                model, held_loader, dist.device, amp=spec.amp, epoch=epoch + 1
            )
            task.train_mode(model)
        row = task.epoch_record(train, heldout)
        history.append(row)
        if dist.main:
            # metrics and history go in as plain dicts: a pickled record would tie every checkpoint to
            # the class's import path
            payload = {
                "format": task.checkpoint_format,
                **task.checkpoint_fields(),
                "model": model.state_dict(),
                "epoch": epoch + 1,
                "metrics": row.model_dump(exclude_none=True),
                **spec.extra,
            }
            score = task.score(row)
            if not score >= best:  # also true for the first finite score
                best = score
                task.save_best(run, model, payload, step=len(steps))
            save_checkpoint(
                last,
                {
                    **payload,
                    "optimizer": optim.state_dict(),
                    "scheduler": sched.state_dict(),
                    "history": [h.model_dump(exclude_none=True) for h in history],
                    "steps": steps,
                    "best": best,
                    "record": spec.record,
                },
            )
            _write_report(spec, history, steps)
            write_previews(run / "previews" / f"epoch_{epoch + 1:03d}.png", preview_rows)
            log.info("%s epoch %d/%d: %s", run.name, epoch + 1, spec.epochs, _line(figures(row)))
        if dist.world > 1:
            torch.distributed.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return history


def _line(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items())


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


# ------------------------------------------------------------------ processes


def _spawned(rank: int, spec: EngineSpec, gpus: tuple[int, ...], port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")  # spawn starts unconfigured
    torch.cuda.set_device(gpus[rank])
    torch.distributed.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(gpus)
    )
    try:
        fit(spec, Dist(rank, len(gpus), torch.device(f"cuda:{gpus[rank]}")))
    finally:
        torch.distributed.destroy_process_group()


def run_licences(spec: EngineSpec) -> LicenceRecord:
    """RUN/licences.json: the parent weights' licences, then every model in the training data's history."""
    from data_schema.licences import inherited
    from labeler.dataset.licences import dataset_licences

    return LicenceRecord(
        models=[*spec.licences, *inherited(dataset_licences(spec.dataset), role_prefix="training data")]
    )


def launch(spec: EngineSpec, gpus: tuple[int, ...], *, stop_after_epoch: int | None = None) -> list[Any]:
    """Run `fit` on the CPU, one GPU, one process per GPU (`mp.spawn`, DDP over NCCL), or under torchrun."""
    check_run_dir(spec)
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
        import torch.multiprocessing as mp

        mp.spawn(_spawned, args=(spec, gpus, _free_port()), nprocs=len(gpus), join=True)
        rows = json.loads((spec.run_dir / "metrics.json").read_text())
        return [spec.task.record_type.model_validate(h) for h in rows]
    device = torch.device(f"cuda:{gpus[0]}") if gpus else torch.device("cpu")
    return fit(spec, Dist(device=device), stop_after_epoch=stop_after_epoch)
