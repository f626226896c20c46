#!/usr/bin/env python
"""Benchmark labeler's `sam3` mask backend against the official SAM 3 image predictor (`Sam3Processor`).

    python benchmarks/bench_sam3.py                                   # tiny random SAM 3, CPU
    python benchmarks/bench_sam3.py --device cuda --arch sam3 --checkpoint ~/ckpt/sam3.pt \\
        --sizes 480x640 --images 16 --batch-size 8 --classes "person,forklift,pallet,cardboard box"

Both run the same model object (same weights) on the same images and class prompts in one process,
alternating pass by pass, so machine load hits both alike. The official way is its documented loop:
`set_image(image)` then `set_text_prompt(name)` for each class (the image encoder once per image, the
text encoder and the grounding pass once per (image, class)); the backend encodes `--batch-size` images
per pass and runs one grounding pass over all their (image, class) pairs. On CUDA both run under
bfloat16 autocast (the official examples' setting; `--no-mixed-precision`: float32).

Reported per image size: images/s of each (best of `--repeats` passes over the images), the ratio
labeler / official, masks per image, and their agreement: per image and class, masks in score order are
paired one to one (both keep the detections over the same threshold, so the counts should match); the
mean IoU of the pairs, the largest score difference, and the count of masks only one side has.

Without `--checkpoint` a SAM 3 with seeded random weights is written to a temporary folder: the tiny one
(`labeler.testing.sam3_tiny`) by default, `--arch small` (its 11 M-parameter one), that of a `--arch` JSON,
or `--arch sam3` at the released size (840 M parameters; a GPU job). Random weights score every query near
0.25, so `--confidence-threshold` defaults to 0.27 (about half the queries of the tiny model) without a
checkpoint and to the official 0.5 with one. Inputs are synthetic scenes (a plain disc before a textured
background), one seed per image.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arch", default=None, help='"sam3", "small" or a Sam3Arch JSON (default: the tiny model)'
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="local sam3.pt (default: random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="+", default=["240x320"], help="HxW of the images")
    p.add_argument("--images", type=int, default=4, help="distinct images per size")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    p.add_argument("--batch-size", type=int, default=4, help="the backend's images per encoder pass")
    p.add_argument("--classes", default="person,forklift,pallet,cardboard box")
    p.add_argument("--confidence-threshold", type=float, default=None)
    p.add_argument("--no-mixed-precision", action="store_true", help="CUDA: float32 instead of bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def agreement(ours: Any, theirs: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[list[float], float, int]:
    """IoUs of masks paired in score order within each class, largest score gap, masks left unpaired."""
    ious, gap, unpaired = [], 0.0, 0
    names = np.array(ours.class_names)
    for name, masks, scores in theirs:
        mine = np.flatnonzero(names == name)  # already in score order
        order = np.argsort(-scores, kind="stable")
        keep = [i for i in order if masks[i].any()]  # the backend drops empty masks
        unpaired += abs(len(mine) - len(keep))
        for i, j in zip(mine, keep, strict=False):
            ious.append(iou(ours.masks[i], masks[j]))
            gap = max(gap, abs(float(ours.scores[i]) - float(scores[j])))
    return ious, gap, unpaired


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from PIL import Image

    from data_schema.backends import Sam3Config
    from labeler.segment.sam3 import Sam3MaskBackend
    from labeler.segment.sam3_model import OFFICIAL, resolve_arch, without_pinned_memory
    from labeler.testing.sam3_tiny import SMALL, TINY, official_processor, write_tiny_sam3
    from labeler.testing.scenes import object_scene

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    arch, checkpoint = args.arch, args.checkpoint
    if checkpoint is None:  # random weights of the named arch (default: the tiny one)
        named = {None: TINY, "small": SMALL, "sam3": OFFICIAL}
        sizes = named[arch] if arch in named else resolve_arch(arch)
        arch_path, checkpoint = write_tiny_sam3(Path(tmp.name), seed=0, arch=sizes)
        arch = "sam3" if arch == "sam3" else str(arch_path)
    arch = arch or "sam3"
    threshold = args.confidence_threshold
    if threshold is None:
        threshold = 0.5 if args.checkpoint is not None else 0.27
    classes = tuple(c.strip() for c in args.classes.split(","))
    config = Sam3Config(
        checkpoint=checkpoint,
        arch=arch,
        classes=classes,
        confidence_threshold=threshold,
        batch_size=args.batch_size,
        mixed_precision=not args.no_mixed_precision,
    )
    backend = Sam3MaskBackend(config, device=args.device)
    model = backend.model
    resolution = resolve_arch(arch).resolution
    processor = official_processor(
        model, resolution=resolution, device=args.device, confidence_threshold=threshold
    )
    cuda = args.device.startswith("cuda")
    amp = cuda and not args.no_mixed_precision

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def official(images: list[np.ndarray]) -> list[list[tuple[str, np.ndarray, np.ndarray]]]:
        out = []
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
        with ctx, without_pinned_memory():
            for image in images:
                state = processor.set_image(Image.fromarray(image))
                per_class = []
                for name in classes:
                    res = processor.set_text_prompt(name, state)
                    per_class.append(
                        (name, res["masks"][:, 0].cpu().numpy(), res["scores"].float().cpu().numpy())
                    )
                out.append(per_class)
        sync()
        return out

    def ours(images: list[np.ndarray]) -> list[Any]:
        got = backend.masks_many(images)
        sync()
        return got

    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"# sam3 arch {args.arch or 'tiny'} ({n_params / 1e6:.1f} M parameters), device "
        f"{args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}; classes {', '.join(classes)}; confidence_threshold "
        f"{threshold}; batch_size {args.batch_size}; {'bf16 autocast' if amp else 'float32'}"
    )
    head = "size | images | labeler img/s | official img/s | ratio | masks/img | mean IoU | max score gap"
    print(f"| {head} | unpaired |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        images = [object_scene(h, w, seed=s).left for s in range(args.images)]
        ours(images[:1])  # warm-up: caches, kernels
        official(images[:1])
        best_ours = best_official = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            got = ours(images)
            best_ours = min(best_ours, time.perf_counter() - t)
            t = time.perf_counter()
            want = official(images)
            best_official = min(best_official, time.perf_counter() - t)
        ious: list[float] = []
        gap, unpaired = 0.0, 0
        for g, wnt in zip(got, want, strict=True):
            i, gp, u = agreement(g, wnt)
            ious += i
            gap, unpaired = max(gap, gp), unpaired + u
        n = len(images)
        print(
            f"| {h}×{w} | {n} | {n / best_ours:.2f} | {n / best_official:.2f} | "
            f"{best_official / best_ours:.2f} | {np.mean([len(g) for g in got]):.1f} | "
            f"{np.mean(ious) if ious else float('nan'):.4f} | {gap:.1e} | {unpaired} |"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
