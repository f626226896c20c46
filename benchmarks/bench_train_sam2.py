"""train-sam2 throughput: optimiser steps/s and peak memory of SAM2 retraining.

One step is what `labeler train-sam2` does per batch (labeler/train/sam2/task.py): image features (the cached
output of the frozen encoder, or the encoder with gradients under --train-encoder), a box or a click per
object then `--corrections` corrective clicks through the official prompt encoder and mask decoder, the
focal + dice + IoU + object-score loss over every prompt step, backward, clipping, AdamW. The first
(warm-up) step fills the embedding cache, as the first epoch does. Each model runs in its own process, so
its peak memory is its own (CPU: peak RSS; CUDA: torch.cuda.max_memory_allocated).

Models: `tiny` (labeler/testing/sam2_tiny.py, 256 px) or a released config name; without `--checkpoint`
a released config is built with random weights (same cost as the release). Images are random, masks
rectangles (the values do not change the cost).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_sam2.py --models tiny --threads 1
    python benchmarks/bench_train_sam2.py --device cuda --bf16 --models sam2.1_hiera_s --batch 4 \\
        --objects 3 --corrections 7 --checkpoint ~/ckpt/sam2.1_hiera_small.pt [--train-encoder]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _parent(model: str, checkpoint: str | None, folder: Path) -> tuple[str, Path]:
    """(config, checkpoint) of `model`: the tiny one written, a release's file, or random weights."""
    import torch

    from labeler.segment.sam2_model import instantiate_model, resolve_config
    from labeler.testing.sam2_tiny import write_tiny_sam2

    if model == "tiny":
        config, ckpt = write_tiny_sam2(folder)
        return str(config), ckpt
    if checkpoint:
        return model, Path(checkpoint).expanduser()
    from omegaconf import OmegaConf

    ckpt = folder / f"{model}-random.pt"
    torch.save({"model": instantiate_model(OmegaConf.load(resolve_config(model))).state_dict()}, ckpt)
    return model, ckpt


def one(args: argparse.Namespace) -> dict:
    """Time `args.steps` steps after one warm-up step, in this process."""
    import torch
    from train_timing import time_steps  # beside this script

    from data_schema.sam2_train import TrainSam2Config
    from labeler.segment.sam2_model import resolve_config
    from labeler.train.engine import autocast
    from labeler.train.sam2.task import Sam2Task

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        config, ckpt = _parent(args.model, args.checkpoint, Path(tmp))
        cfg = TrainSam2Config(
            dataset=Path("unused"),
            out=Path("unused"),
            sam2_checkpoint=ckpt,
            sam2_config=config,
            corrections=args.corrections,
            train_encoder=args.train_encoder,
        )
        task = Sam2Task(cfg=cfg, config_path=resolve_config(config), targets={}, image_size=0)
        model = task.build_model().to(device)
    s = model.sam.image_size
    groups = task.param_groups(model)
    optim = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    trainable = [p for g in groups for p in g["params"]]
    task.train_mode(model)
    g = torch.Generator().manual_seed(0)
    b, k = args.batch, args.objects
    masks = torch.zeros(b, k, s, s, dtype=torch.bool)
    for j in range(k):  # nested rectangles, one per object
        lo, hi = s * (j + 1) // (2 * k + 2), s - s * (j + 1) // (2 * k + 2)
        masks[:, j, lo:hi, lo : hi - s // 8] = True
    batch = {
        "image": torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g),
        "masks": masks,
        "valid": torch.ones(b, k, dtype=torch.bool),
        "row": torch.arange(b),
        "seed": torch.arange(b),
    }
    batch = task.prepare(batch, device)
    cuda = device.type == "cuda"

    def step(i: int) -> None:
        batch["seed"] = batch["seed"] + i  # a box or a click, as the plan draws
        with autocast(device, args.bf16):
            out = task.forward(model, batch)
        loss = task.loss(out, batch)["loss"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()

    dt, peak_gib = time_steps(step, args.steps, cuda=cuda)
    return {
        "size": s,
        "s_per_step": dt,
        "steps_per_s": 1 / dt,
        "images_per_s": b / dt,
        "peak_gib": peak_gib,
        "n": sum(p.numel() for p in trainable),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny", help="tiny and/or released config names, comma-separated")
    ap.add_argument("--checkpoint", default=None, help="a release checkpoint (one model only)")
    ap.add_argument("--batch", type=int, default=2, help="images per step")
    ap.add_argument("--objects", type=int, default=3, help="objects per image")
    ap.add_argument("--corrections", type=int, default=7)
    ap.add_argument("--train-encoder", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only, as train-sam2 --amp)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    print(
        f"\ndevice {args.device}; torch threads {args.threads}; bf16 {args.bf16 and args.device != 'cpu'}; "
        f"batch {args.batch} images x {args.objects} objects; {args.corrections} corrective clicks; "
        f"encoder {'trained' if args.train_encoder else 'frozen (cached)'}; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| model | input px | s/step | steps/s | images/s | peak memory GiB | trained parameters |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", "--model", model, "--batch", str(args.batch)]
        cmd += ["--objects", str(args.objects), "--corrections", str(args.corrections)]
        cmd += ["--steps", str(args.steps), "--device", args.device, "--threads", str(args.threads)]
        cmd += (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (
            ["--bf16"] if args.bf16 else []
        )
        cmd += ["--train-encoder"] if args.train_encoder else []
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            print(f"| {model} | | failed: {res.stderr.strip().splitlines()[-1]} | | | | |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"| {model} | {r['size']} | {r['s_per_step']:.3f} | {r['steps_per_s']:.2f} "
            f"| {r['images_per_s']:.2f} | {r['peak_gib']:.2f} | {r['n'] / 1e6:.2f} M |"
        )


if __name__ == "__main__":
    main()
