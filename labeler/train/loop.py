"""The training loop shared by `train-heads` and `finetune`: data, AdamW + warm-up/cosine, bf16 autocast on
CUDA, a checkpoint every epoch (resume restores model, optimiser, schedule and history exactly), held-out
metrics, and the run folder's CSV/JSON/PNG files. One process, `mp.spawn` over several GPUs, or torchrun.

Run folder:
    config.json   the command's config + what was resolved (weights, dataset version, devices)
    split.json    train / held-out sample ids
    metrics.csv, metrics.json, steps.csv, curves.png, previews/epoch_NNN.png
    checkpoints/last.pt (resume), checkpoints/best.pt (lowest held-out loss; predict, finetune)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_schema.heads import EpochMetrics, HeadsModelConfig, HeldoutFigures, InstanceParams
from labeler.errors import LabelerError
from labeler.io import atomic_path, write_text_atomic
from labeler.train.heads import HeadsModel
from labeler.train.losses import LossWeights, joint_loss

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "labeler-heads/1"
RESUME_MAY_DIFFER = ("resume", "workers", "gpus")


@dataclass(frozen=True)
class FitSpec:
    """Everything the loop needs. `make_model` / `make_groups` are picklable (module-level partials)."""

    run_dir: Path
    dataset: Path
    model_config: HeadsModelConfig
    train_ids: list[str]
    heldout_ids: list[str]
    make_model: Callable[[], HeadsModel]
    make_groups: Callable[[HeadsModel], list[dict[str, Any]]]
    record: dict[str, Any]  # config.json; also compared on resume
    epochs: int
    batch_size: int
    workers: int
    seed: int
    augment: bool
    amp: bool
    warmup_frac: float
    weight_decay: float
    loss: LossWeights
    instances: InstanceParams
    previews: int
    resume: bool
    title: str = "run"
    extra: dict[str, Any] = field(default_factory=dict)  # stored in checkpoints (weights label, base run)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


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


def _loader(ds, sampler, batch_size: int, workers: int, pin: bool):
    """Workers persist across epochs: the sampler runs in this process, so its (epoch, i) keys stay right."""
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) uint8 RGB array."""
    return np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy())


def check_run_dir(spec: FitSpec) -> None:
    if (spec.run_dir / "checkpoints" / "last.pt").is_file() and not spec.resume:
        raise LabelerError(
            f"{spec.run_dir}: already holds a run; pass --resume to continue it or choose a new --out"
        )


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`, images normalised there (they travel as uint8)."""
    from labeler.train.data import normalise_batch

    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["image"] = normalise_batch(out["image"])
    return out


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise LabelerError(f"{path}: not a labeler heads checkpoint ({CHECKPOINT_FORMAT})")
    return ck


@torch.no_grad()
def evaluate(
    model: HeadsModel, loader, spec: FitSpec, dist: Dist, *, epoch: int
) -> tuple[HeldoutFigures, list[np.ndarray]]:
    """Held-out loss and metrics (AbsRel, δ1 vs stereo depth; fg IoU, mIoU, AP50 vs pseudo-masks) at the
    model's input resolution, plus preview rows for the first `spec.previews` samples."""
    from labeler.train.instances import instances_from_maps, object_table, sigmoid
    from labeler.train.metrics import HeldoutMetrics
    from labeler.train.report import preview_row

    model.eval()
    acc, losses, rows = HeldoutMetrics(), list[float](), list[np.ndarray]()
    reader = loader.dataset
    for batch in loader:
        b = _to(batch, dist.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=spec.amp and dist.device.type == "cuda"):
            out = model(b["image"])
        losses.append(float(joint_loss(out, b, spec.loss)["loss"]))
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
        for j in range(batch["image"].shape[0]):
            valid = batch["weight"][j].numpy() > 0
            target = np.where(valid, batch["depth"][j].numpy(), np.nan)
            depth = out["depth"][j] if "depth" in out else None
            if depth is not None:
                acc.add_depth(depth, target)
            ids = scores = None
            if "objectness" in out:
                ids, scores = instances_from_maps(
                    sigmoid(out["objectness"][j]), sigmoid(out["boundary"][j]), depth, spec.instances
                )
                acc.add_instances(ids, scores, batch["ids"][j].numpy())
            if len(rows) < spec.previews:
                row = int(batch["row"][j])
                image = to_hwc(batch["image"][j])
                tids = batch["ids"][j].numpy().astype(np.uint16)
                rows.append(
                    preview_row(
                        image,
                        sample_id=f"{reader.sample_ids[row]} (epoch {epoch})",
                        target_depth=target,
                        pred_depth=depth,
                        target_ids=tids,
                        target_objects=object_table(tids, np.ones(int(tids.max())), target),
                        pred_ids=ids,
                        pred_objects=object_table(ids, scores, depth)
                        if ids is not None and scores is not None
                        else None,
                    )
                )
    model.train()
    return acc.summary(heldout_loss=float(np.mean(losses)) if losses else float("nan")), rows


def fit(
    spec: FitSpec, dist: Dist | None = None, *, stop_after_epoch: int | None = None
) -> list[EpochMetrics]:
    """Train; returns the per-epoch history (also in RUN/metrics.json).

    Args:
        spec: what to train and where.
        dist: rank/world/device (default: one process on CPU).
        stop_after_epoch: return after this epoch's checkpoint (simulates an interruption in tests).
    """
    from labeler.train.data import EpochSampler, HeadsDataset
    from labeler.train.report import write_curves, write_metrics, write_previews

    dist = dist or Dist()
    run, ckpt_dir = spec.run_dir, spec.run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    resumed = spec.resume and last.is_file()
    check_run_dir(spec)
    if not spec.train_ids:
        raise LabelerError(f"{spec.dataset}: no training samples (held-out split took them all)")
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "config.json", json.dumps(spec.record, indent=1))
        write_text_atomic(
            run / "split.json", json.dumps({"train": spec.train_ids, "heldout": spec.heldout_ids}, indent=1)
        )
    mc = spec.model_config
    train_ds = HeadsDataset(
        spec.dataset,
        spec.train_ids,
        input_size=mc.input_size,
        train=True,
        augment=spec.augment,
        max_depth_m=mc.max_depth_m,
        seed=spec.seed,
    )
    held_ds = (
        HeadsDataset(
            spec.dataset,
            spec.heldout_ids,
            input_size=mc.input_size,
            train=False,
            max_depth_m=mc.max_depth_m,
            seed=spec.seed,
        )
        if spec.heldout_ids
        else None
    )
    sampler = EpochSampler(len(train_ds), seed=spec.seed, rank=dist.rank, world=dist.world)
    pin = dist.device.type == "cuda"
    train_loader = _loader(train_ds, sampler, spec.batch_size, spec.workers, pin)
    held_loader = (
        _loader(
            held_ds,
            EpochSampler(len(held_ds), seed=spec.seed, shuffle=False),
            spec.batch_size,
            spec.workers,
            pin,
        )
        if held_ds is not None and dist.main
        else None
    )

    model = spec.make_model().to(dist.device)
    groups = spec.make_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=spec.weight_decay)
    steps_per_epoch = math.ceil(len(sampler) / spec.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, warmup_cosine(spec.epochs * steps_per_epoch, spec.warmup_frac)
    )
    history: list[EpochMetrics] = []
    steps: list[dict[str, Any]] = []
    start, best = 0, float("inf")
    if resumed:
        ck = load_checkpoint(last)
        _check_resume(ck["record"], spec.record, run)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, steps, best = ck["epoch"], ck["steps"], ck["best"]
        history = [EpochMetrics.model_validate(h) for h in ck["history"]]
        if dist.main:
            log.info("%s: resumed after epoch %d", run, start)
    net: torch.nn.Module = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
        )
    trainable = [p for g in groups for p in g["params"]]
    use_amp = spec.amp and dist.device.type == "cuda"
    model.train()
    for epoch in range(start, spec.epochs):
        sampler.set_epoch(epoch)
        t0, seen, sums = time.perf_counter(), 0, {"loss": 0.0, "depth": 0.0, "seg": 0.0}
        n_batches = 0
        for batch in train_loader:
            b = _to(batch, dist.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                out = net(b["image"])
            terms = joint_loss(out, b, spec.loss)
            optim.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optim.step()
            sched.step()
            vals = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in vals.items():
                sums[k] += v
            n_batches += 1
            seen += int(b["image"].shape[0]) * dist.world
            steps.append(
                {"step": len(steps) + 1, "epoch": epoch + 1, **vals, "lr": optim.param_groups[0]["lr"]}
            )
        seconds = time.perf_counter() - t0
        if dist.world > 1:  # epoch means over every rank's batches
            t = torch.tensor(
                [sums["loss"], sums["depth"], sums["seg"], n_batches], dtype=torch.float64, device=dist.device
            )
            torch.distributed.all_reduce(t)
            sums, n_batches = {"loss": float(t[0]), "depth": float(t[1]), "seg": float(t[2])}, int(t[3])
        terms_mean = {k: sums[k] / max(n_batches, 1) for k in ("depth", "seg") if k in steps[-1]}
        heldout, preview_rows = HeldoutFigures(), list[np.ndarray]()
        if dist.main and held_loader is not None:
            heldout, preview_rows = evaluate(model, held_loader, spec, dist, epoch=epoch + 1)
        row = EpochMetrics(
            epoch=epoch + 1,
            train_loss=sums["loss"] / max(n_batches, 1),
            lr=optim.param_groups[0]["lr"],
            seconds=seconds,
            train_samples_per_s=seen / max(seconds, 1e-9),
            train_depth=terms_mean.get("depth"),
            train_seg=terms_mean.get("seg"),
            **heldout.model_dump(),
        )
        history.append(row)
        if dist.main:
            score = row.heldout_loss if row.heldout_loss is not None else row.train_loss
            # metrics and history go in as plain dicts, as they always have: a pickled record would tie
            # every checkpoint to the class's import path
            payload = {
                "format": CHECKPOINT_FORMAT,
                "model_config": mc.model_dump(mode="json"),
                "instances": spec.instances.model_dump(mode="json"),
                "model": model.state_dict(),
                "epoch": epoch + 1,
                "metrics": row.model_dump(exclude_none=True),
                **spec.extra,
            }
            if not score >= best:  # also true for the first finite score
                best = score
                save_checkpoint(ckpt_dir / "best.pt", payload)
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
            write_metrics(run, history, steps)
            write_curves(run / "curves.png", history, steps, title=spec.title)
            write_previews(run / "previews" / f"epoch_{epoch + 1:03d}.png", preview_rows)
            log.info(
                "%s epoch %d/%d: %s",
                run.name,
                epoch + 1,
                spec.epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in row.figures().items()),
            )
        if dist.world > 1:
            torch.distributed.barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return history


# ------------------------------------------------------------------ processes


def _env_dist() -> Dist | None:
    """torchrun (possibly multi-node): RANK / WORLD_SIZE / LOCAL_RANK in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = torch.cuda.is_available()
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, torch.device(f"cuda:{local}") if cuda else torch.device("cpu"))


def _spawned(rank: int, spec: FitSpec, gpus: tuple[int, ...], port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")  # spawn starts unconfigured
    torch.cuda.set_device(gpus[rank])
    torch.distributed.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(gpus)
    )
    try:
        fit(spec, Dist(rank, len(gpus), torch.device(f"cuda:{gpus[rank]}")))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    spec: FitSpec, gpus: tuple[int, ...], *, stop_after_epoch: int | None = None
) -> list[EpochMetrics]:
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
        return [
            EpochMetrics.model_validate(h) for h in json.loads((spec.run_dir / "metrics.json").read_text())
        ]
    device = torch.device(f"cuda:{gpus[0]}") if gpus else torch.device("cpu")
    return fit(spec, Dist(device=device), stop_after_epoch=stop_after_epoch)
