"""Heads training throughput, and whether the shard reader can feed it.

1. Shard reader: samples/s of `open_dataset(...)[i]` and of training items (`HeadsDataset`: read + resize +
   augment + targets) against the same items built from samples already in memory (ratio = what reading
   the Zarr shards costs); DataLoader samples/s with 0 and N workers.
2. Training step: samples/s of forward + backward + AdamW step with the ViT frozen, per backbone and
   input size, on the CPU or (--device cuda, bf16 autocast) a GPU.
3. Starvation: loader samples/s / training samples/s (> 1: the accelerator is never waiting on data).

    .venv/bin/python benchmarks/bench_train.py                      # 16 pairs 640x480 built by the pipeline
    .venv/bin/python benchmarks/bench_train.py --dataset datasets/demo --models tiny:126,vits:518
    .venv/bin/python benchmarks/bench_train.py --device cuda --models vits:518,vitb:518 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_dataset(folder: Path, n: int, width: int, height: int) -> Path:
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(folder / "rect", n, width, height, seed=11)
    calib = identity_calibration_yaml(folder / "calib.yaml", width, height)
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=folder / "rect",
            calib=calib,
            out=folder / "ds",
            scheduler="sync",
            previews=False,
            progress=False,
        )
    )
    return folder / "ds"


def rate(fn, n: int, *, min_s: float = 2.0) -> float:
    """Items/s of fn(i) for i in 0..n-1, repeated until min_s seconds have passed (one warm-up pass)."""
    for i in range(n):
        fn(i)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        for i in range(n):
            fn(i)
        done += n
    return done / (time.perf_counter() - t0)


def loader_rate(ds, workers: int, batch: int, epochs: int = 3) -> float:
    import torch

    from labeler.train.sampling import EpochSampler

    sampler = EpochSampler(len(ds), seed=0)
    dl = torch.utils.data.DataLoader(
        ds, batch_size=batch, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
    )
    sampler.set_epoch(0)
    for _ in dl:  # warm-up: worker start
        pass
    t0, n = time.perf_counter(), 0
    for e in range(1, epochs + 1):
        sampler.set_epoch(e)
        for b in dl:
            n += b["image"].shape[0]
    return n / (time.perf_counter() - t0)


def train_rate(
    dataset: Path, ids: list[str], backbone: str, size: int, batch: int, device: str, steps: int
) -> tuple[float, float]:
    """(samples/s, s/step) of frozen-backbone fusion training, random init, batches from memory."""
    import torch

    from data_schema.commands import HeadsModelConfig
    from labeler.train.heads.data import HeadsDataset, normalise_batch
    from labeler.train.heads.losses import LossWeights, joint_loss
    from labeler.train.heads.model import build_model

    mc = HeadsModelConfig(backbone=backbone, input_size=size)
    ds = HeadsDataset(dataset, ids, input_size=size, train=True)
    items = [ds[(0, i % len(ds))] for i in range(batch)]
    b = {k: v.to(device) for k, v in torch.utils.data.default_collate(items).items()}
    b["image"] = normalise_batch(b["image"])
    model = build_model(mc).to(device)
    opt = torch.optim.AdamW(model.head_parameters(), lr=1e-4)
    cuda = device.startswith("cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(b["image"])
        loss = joint_loss(out, b, LossWeights())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return batch / dt, dt


def main() -> None:
    import os

    import torch

    from labeler import open_dataset
    from labeler.train.heads.data import HeadsDataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", type=Path, help="default: build 16 pairs 640x480 with the pipeline")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--size", type=int, default=518, help="input size of the loader measurements")
    ap.add_argument("--models", default="tiny:126,vits:518", help="backbone:input_size,...")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    dataset = args.dataset or build_dataset(Path(tmp.name), args.pairs, 640, 480)
    reader = open_dataset(dataset)
    ids = reader.sample_ids
    n = len(ids)
    h, w = reader[0].left.shape[:2]
    memory = [reader[i] for i in range(n)]
    shard_ds = HeadsDataset(dataset, ids, input_size=args.size, train=True)
    mem_ds = HeadsDataset(dataset, ids, input_size=args.size, train=True, source=memory)

    read = rate(lambda i: reader[i], n)
    item_shard = rate(lambda i: shard_ds[(0, i)], n)
    item_mem = rate(lambda i: mem_ds[(0, i)], n)
    dl0 = loader_rate(shard_ds, 0, args.batch)
    dlw = loader_rate(shard_ds, args.workers, args.batch)
    print(
        f"\ndataset {dataset}: {n} samples {w}x{h}; device {args.device}; torch threads "
        f"{torch.get_num_threads()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| reader | samples/s | ratio |\n|---|---|---|")
    print(f"| `ds[i]` (Zarr shards: decompress all arrays of one sample) | {read:.1f} | |")
    print(
        f"| training item from shards (read + resize to {args.size} + augment + targets) "
        f"| {item_shard:.1f} | "
        f"{item_shard / item_mem:.2f} |"
    )
    print(f"| the same items from samples in memory (baseline) | {item_mem:.1f} | 1 |")
    print(f"| DataLoader, 0 workers, batch {args.batch} | {dl0:.1f} | |")
    print(f"| DataLoader, {args.workers} workers, batch {args.batch} | {dlw:.1f} | |")
    print(f"\n| model | input | batch | s/step | train samples/s | loader ({args.workers} workers) / train |")
    print("|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        backbone, size = spec.split(":")
        sps, dt = train_rate(dataset, ids, backbone, int(size), args.batch, args.device, args.steps)
        feed = dlw if int(size) == args.size else float("nan")
        print(
            f"| {backbone} (frozen, fusion heads) | {size} | {args.batch} | {dt:.3f} | {sps:.2f} | "
            f"{feed / sps:.1f} |"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
