"""train-stereo throughput: optimiser steps/s and peak memory of FoundationStereo fine-tuning.

One step is what `labeler train-stereo` does per batch (labeler/train/stereo/task.py): the sequence pass over
`--iters` GRU iterations, distillation + photometric + smoothness loss, backward, gradient clipping, AdamW.
Each (model, size) runs in its own process, so its peak memory is its own (CPU: peak RSS of the process;
CUDA: torch.cuda.max_memory_allocated). Inputs are a textured random pair shifted by 8 px (the values do not
change the cost); weights from --weights, or labeler's deterministic ViT-S release (random-like weights).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_stereo.py --sizes 96x128,240x320 --iters 2 \\
        --max-disp 32 --threads 1
    python benchmarks/bench_train_stereo.py --device cuda --bf16 --sizes 480x640 --iters 22 --batch 2 \\
        --weights vits=~/ckpt/11-33-40/model_best_bp2.pth vitl=~/ckpt/23-51-11/model_best_bp2.pth
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one(args: argparse.Namespace) -> dict:
    """Time `args.steps` steps after one warm-up step, in this process."""
    import torch
    from train_timing import time_steps  # beside this script

    from data_schema.stereo_train import TrainStereoConfig
    from labeler.models.foundation_stereo.release import find_release, read_release_config
    from labeler.train.engine import autocast
    from labeler.train.stereo.task import StereoTask

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    files = find_release(args.weights[0])
    release = read_release_config(files.cfg)
    cfg = TrainStereoConfig(
        dataset=Path("unused"),
        out=Path("unused"),
        stereo_weights=files.weights,
        crop=(h, w),
        train_iters=args.iters,
        max_disp=args.max_disp,
    )
    task = StereoTask(
        cfg=cfg,
        weights=files.weights,
        max_disp=args.max_disp or release.max_disp,
        valid_iters=args.iters,
        release_cfg={},
    )
    model = task.build_model().to(device)
    groups = task.param_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    task.train_mode(model)
    g = torch.Generator().manual_seed(0)
    left = (torch.rand(args.batch, 3, h, w, generator=g) * 255).round()
    right = torch.roll(left, -8, dims=-1)
    batch = {
        "left": left,
        "right": right,
        "left_clean": left / 255,
        "right_clean": right / 255,
        "disparity": torch.full((args.batch, h, w), 8.0),
        "weight": torch.ones(args.batch, h, w),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    cuda = device.type == "cuda"

    def step() -> None:
        with autocast(device, args.bf16):
            out = task.forward(model, batch)
        loss = task.loss(out, batch)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()

    dt, peak_gib = time_steps(lambda _: step(), args.steps, cuda=cuda)
    n_train = sum(p.numel() for p in trainable)
    return {
        "s_per_step": dt,
        "steps_per_s": 1 / dt,
        "pairs_per_s": args.batch / dt,
        "peak_gib": peak_gib,
        "n": n_train,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--weights", nargs="*", default=[], help="name=path/model_best_bp2.pth ... (default: ViT-S gen)"
    )
    ap.add_argument("--sizes", default="96x128,240x320", help="HxW,... training crops (multiples of 32)")
    ap.add_argument("--iters", type=int, default=2, help="GRU iterations of the training pass")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-disp", type=int, default=None, help="cost volume range (default: cfg.yaml's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only, as train-stereo --amp)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return

    import os

    tmp = tempfile.TemporaryDirectory()
    weights = dict(w.split("=", 1) for w in args.weights)
    if not weights:
        from labeler.testing.foundation_stereo_release import write_release

        weights = {"vits (generated)": str(write_release("vits", tmp.name))}
    print(
        f"\ndevice {args.device}; torch threads {args.threads}; bf16 {args.bf16 and args.device != 'cpu'}; "
        f"batch {args.batch}; {args.iters} GRU iterations; max_disp {args.max_disp or 'cfg.yaml'}; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| model | crop | s/step | steps/s | pairs/s | peak memory GiB | trained parameters |")
    print("|---|---|---|---|---|---|---|")
    for name, path in weights.items():
        for size in args.sizes.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                "--size",
                size,
                "--weights",
                str(Path(path).expanduser()),
            ]
            cmd += ["--iters", str(args.iters), "--batch", str(args.batch), "--steps", str(args.steps)]
            cmd += ["--device", args.device, "--threads", str(args.threads)]
            cmd += (["--max-disp", str(args.max_disp)] if args.max_disp else []) + (
                ["--bf16"] if args.bf16 else []
            )
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                print(f"| {name} | {size} | failed: {res.stderr.strip().splitlines()[-1]} | | | | |")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"| {name} | {size} | {r['s_per_step']:.2f} | {r['steps_per_s']:.3f} "
                f"| {r['pairs_per_s']:.3f} | {r['peak_gib']:.2f} | {r['n'] / 1e6:.1f} M |"
            )
    tmp.cleanup()


if __name__ == "__main__":
    main()
