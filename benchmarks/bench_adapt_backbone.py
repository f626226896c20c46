"""adapt-backbone throughput: optimiser steps/s and peak memory of DINOv2 continued self-supervised training.

One step is what `labeler adapt-backbone` does per batch (labeler/train/dino/task.py): the teacher EMA
update, the teacher on the 2 global crops (Sinkhorn-Knopp of its class tokens and masked patches), the
student on every crop (global ones masked), DINO + iBOT + KoLeo, backward, gradient clipping, AdamW. Each
configuration runs in its own process, so its peak memory is its own (CPU: peak RSS of the process; CUDA:
torch.cuda.max_memory_allocated). Weights are a seeded random ViT of the size (values do not change the
cost); crops are random pixels with block masks as the data pipeline draws them. It also times the
multi-crop views of one 640x480 image (what each DataLoader worker does per image).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adapt_backbone.py --threads 1
    python benchmarks/bench_adapt_backbone.py --device cuda --bf16 --configs vits-last2,vits-lora8 \\
        --batch 32 --global-size 224 --local-size 98 --local-crops 8 --prototypes 65536
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_schema.heads import Backbone  # noqa: E402  (after the path: pydantic only)

# name -> (backbone, --unfreeze-last, --lora-rank)
CONFIGS: dict[str, tuple[Backbone, int, int]] = {
    "tiny-last2": ("tiny", 2, 0),
    "tiny-lora8": ("tiny", 1, 8),
    "vits-last2": ("vits", 2, 0),
    "vits-lora8": ("vits", 2, 8),
    "vitl-last2": ("vitl", 2, 0),
    "vitl-lora8": ("vitl", 2, 8),
}


def one(args: argparse.Namespace) -> dict:
    """Time `args.steps` steps after one warm-up step, in this process."""
    import numpy as np
    import torch
    from train_timing import time_steps  # beside this script

    from data_schema.dino_adapt import AdaptBackboneConfig
    from labeler.models.dinov2_dpt import DinoViT
    from labeler.train.dino.data import block_mask
    from labeler.train.dino.model import Schedules, save_backbone
    from labeler.train.dino.task import DinoTask
    from labeler.train.engine import autocast
    from labeler.train.heads.model import BACKBONE_SPECS

    torch.set_num_threads(args.threads)
    backbone, last, rank = CONFIGS[args.config]
    device = torch.device(args.device)
    tmp = Path(args.tmp)
    parent = tmp / f"{backbone}.pth"
    if not parent.is_file():
        save_backbone(parent, DinoViT(BACKBONE_SPECS[backbone]).state_dict())
    cfg = AdaptBackboneConfig(
        dataset=Path("unused"),
        out=Path("unused"),
        backbone=backbone,
        weights=parent,
        unfreeze_last=last,
        lora_rank=rank,
        batch_size=args.batch,
        global_size=args.global_size,
        local_size=args.local_size,
        local_crops=args.local_crops,
        prototypes=args.prototypes,
    )
    schedules = Schedules(1000, 0.07, 0.04, 300, 0.992)
    task = DinoTask(cfg=cfg, phase="adapt", spec=BACKBONE_SPECS[backbone], parent=parent, schedules=schedules)
    model = task.build_model().to(device)
    groups = task.param_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    task.train_mode(model)
    rng = np.random.default_rng(0)
    b, g, lsz, n_local = args.batch, args.global_size, args.local_size, args.local_crops
    grid = g // 14
    masks = np.zeros((b, 2, grid * grid), bool)
    for i in range(b):  # half the crops masked, 10-50 % of their patches (the pipeline's expectation)
        if i % 2 == 0:
            masks[i, 0] = block_mask(rng, grid, int(grid * grid * rng.uniform(0.1, 0.5))).ravel()
    batch = {
        "global": torch.from_numpy(rng.integers(0, 255, (b, 2, 3, g, g), dtype=np.uint8)),
        "local": torch.from_numpy(rng.integers(0, 255, (b, n_local, 3, lsz, lsz), dtype=np.uint8)),
        "masks": torch.from_numpy(masks),
        "row": torch.arange(b),
    }
    cuda = device.type == "cuda"

    def step() -> None:
        x = task.prepare(batch, device)
        with autocast(device, args.bf16):
            out = task.forward(model, x)
        loss = task.loss(out, x)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad)
        optim.step()

    dt, peak_gib = time_steps(lambda _: step(), args.steps, cuda=cuda)
    return {
        "s_per_step": dt,
        "steps_per_s": 1 / dt,
        "images_per_s": b / dt,
        "peak_gib": peak_gib,
        "n": sum(p.numel() for p in trainable),
    }


def views_per_s(args: argparse.Namespace, n: int = 10) -> float:
    import numpy as np

    from labeler.train.dino.data import CropSettings, views

    image = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    crops = CropSettings(args.global_size, args.local_size, args.local_crops)
    t0 = time.perf_counter()
    for i in range(n):
        views(np.random.default_rng(i), image, crops)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--configs", default="tiny-last2,tiny-lora8,vits-last2,vits-lora8", help=", ".join(CONFIGS)
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--global-size", type=int, default=112)
    ap.add_argument("--local-size", type=int, default=56)
    ap.add_argument("--local-crops", type=int, default=4)
    ap.add_argument("--prototypes", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only, as adapt-backbone --amp)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return

    import os

    tmp = tempfile.TemporaryDirectory()
    print(
        f"\ndevice {args.device}; torch threads {args.threads}; bf16 {args.bf16 and args.device != 'cpu'}; "
        f"batch {args.batch}; crops 2 x {args.global_size} px + {args.local_crops} x {args.local_size} px; "
        f"{args.prototypes} prototypes; load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"multi-crop views of a 640x480 image: {views_per_s(args):.1f} images/s per worker\n")
    print("| config | s/step | steps/s | images/s | peak memory GiB | trained parameters |")
    print("|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        cmd = [sys.executable, __file__, "--one", "--config", name, "--tmp", tmp.name]
        for flag in (
            "batch",
            "steps",
            "global_size",
            "local_size",
            "local_crops",
            "prototypes",
            "device",
            "threads",
        ):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--bf16"] if args.bf16 else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            print(f"| {name} | failed: {res.stderr.strip().splitlines()[-1]} | | | | |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"| {name} | {r['s_per_step']:.3f} | {r['steps_per_s']:.2f} | {r['images_per_s']:.2f} "
            f"| {r['peak_gib']:.2f} | {r['n'] / 1e6:.2f} M |"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
