#!/usr/bin/env python
"""Benchmark labeler's `sam2` mask backend against the official SAM2AutomaticMaskGenerator.

    python benchmarks/bench_sam2.py                                   # tiny random model, CPU
    python benchmarks/bench_sam2.py --device cuda --config sam2.1_hiera_s \\
        --checkpoint ~/ckpt/sam2.1_hiera_small.pt --sizes 480x640 --points-per-side 32 --keep official

Both run the same model object (same weights) with the same settings in the same process, alternating
image by image, so machine load hits both alike. Reported per setting: images/s of each (median time
per image), the ratio labeler / official (by wall time, and by CPU time of the process, steadier on a
shared machine), masks per image, and the agreement of their masks: masks
are matched one to one (identical masks first, the rest by the Hungarian method on IoU), and the mean
IoU of the matched pairs is given with the number of masks either side left unmatched.

`--keep` picks the quality thresholds:
- `all`: pred_iou_thresh 0, stability_score_thresh 0, box_nms_thresh 1: every decoded mask is kept
  (the random tiny model's masks are speckles whose boxes span the image; the official defaults
  would keep none and NMS would merge the rest into one);
- `some`: box_nms_thresh 1, stability 0, pred_iou_thresh at the 90th percentile of the model's predicted
  IoUs on the first image: about a tenth of the masks survive, closer to what a trained model keeps;
- `official`: the official defaults (for a released checkpoint).

Without `--checkpoint` the tiny random SAM2 (labeler.testing.sam2_tiny) is written to a temporary folder.
Inputs are synthetic scenes (a plain disc before a textured background), one seed per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="sam2.1_hiera_t|s|b+|l or a YAML (default: the tiny model)")
    p.add_argument("--checkpoint", type=Path, default=None, help="local checkpoint (default: tiny random)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="+", default=["240x320"], help="HxW of the images")
    p.add_argument("--images", type=int, default=3, help="distinct images per size")
    p.add_argument("--repeats", type=int, default=2, help="timed passes over the images")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--keep", nargs="+", default=["all", "some"], choices=["all", "some", "official"])
    p.add_argument("--no-mixed-precision", action="store_true", help="CUDA: float32 instead of bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def match_masks(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int, int]:
    """One-to-one matching of (N, H, W) and (M, H, W) bool masks.

    Returns:
        (mean IoU of matched pairs, matched pairs, identical pairs, unmatched masks of a + of b).
    """
    from scipy.optimize import linear_sum_assignment

    index: dict[bytes, list[int]] = {}
    for j, m in enumerate(b):
        index.setdefault(np.packbits(m).tobytes(), []).append(j)
    rest_a, used_b = [], set()
    for i, m in enumerate(a):
        js = index.get(np.packbits(m).tobytes())
        if js:
            used_b.add(js.pop())
        else:
            rest_a.append(i)
    rest_b = [j for j in range(len(b)) if j not in used_b]
    identical = len(a) - len(rest_a)
    ious = [1.0] * identical
    if rest_a and rest_b:
        fa = a[rest_a].reshape(len(rest_a), -1).astype(np.float32)
        fb = b[rest_b].reshape(len(rest_b), -1).astype(np.float32)
        inter = fa @ fb.T
        union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
        iou = inter / np.maximum(union, 1)
        rows, cols = linear_sum_assignment(-iou)
        ious += [float(iou[r, c]) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0]
    matched = len(ious)
    unmatched = len(a) + len(b) - 2 * matched
    return (float(np.mean(ious)) if ious else float("nan")), matched, identical, unmatched


def official_masks(generator, image: np.ndarray) -> np.ndarray:
    records = [r for r in generator.generate(image) if r["area"] > 0]  # as labeler, drop empty masks
    if not records:
        return np.zeros((0, *image.shape[:2]), bool)
    order = np.argsort([-r["predicted_iou"] for r in records], kind="stable")
    return np.stack([records[i]["segmentation"] for i in order])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    import torch

    from data_schema.backends import Sam2Config
    from labeler.segment.sam2_amg import Sam2MaskBackend
    from labeler.testing.sam2_tiny import OPEN_THRESHOLDS, official_generator, write_tiny_sam2
    from labeler.testing.scenes import object_scene

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    if args.checkpoint is None:
        config, checkpoint = write_tiny_sam2(tmp.name, seed=0)
        config_name, model_name = str(config), "tiny random SAM2 (labeler.testing.sam2_tiny, seed 0)"
    else:
        config_name, checkpoint = args.config or "sam2.1_hiera_s", args.checkpoint
        model_name = f"{config_name} from {checkpoint.name}"
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_mixed_precision
    print(
        f"# {model_name}; device {describe(device)}; torch {torch.__version__}; "
        f"{'bf16 autocast' if amp else 'float32'}"
    )
    print(
        "| image | setting | masks/image | labeler img/s | official img/s | ratio | ratio (CPU time) "
        "| mean IoU matched | identical | unmatched |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        images = [object_scene(h, w, seed=s).left for s in range(args.images)]
        for keep in args.keep:
            base = {"points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch}
            if keep != "official":
                base.update({k: v for k, v in OPEN_THRESHOLDS.items() if k != "points_per_side"})
            cfg = Sam2Config(checkpoint=checkpoint, config=config_name, mixed_precision=amp, **base)
            if keep == "some":
                cfg = cfg.model_copy(
                    update={"pred_iou_thresh": iou_percentile(cfg, images[0], args.device, 90)}
                )
            ours = Sam2MaskBackend(cfg, device=args.device)
            official = official_generator(ours.model, cfg)

            def run_official(image: np.ndarray, official=official) -> np.ndarray:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    return official_masks(official, image)

            ours.masks(images[0]), run_official(images[0])  # warm-up (and the model load)
            t_ours, t_official, agree = [], [], []
            for _ in range(args.repeats):
                for image in images:
                    a, t = timed(lambda im=image, ours=ours: ours.masks(im).masks, device)
                    t_ours.append(t)
                    b, t = timed(lambda im=image, run=run_official: run(im), device)
                    t_official.append(t)
                    agree.append((len(a), len(b), *match_masks(a, b)))
            r_ours = 1 / statistics.median(t for t, _ in t_ours)
            r_off = 1 / statistics.median(t for t, _ in t_official)
            cpu_ratio = statistics.median(c for _, c in t_official) / statistics.median(c for _, c in t_ours)
            n = np.mean([x[0] for x in agree])
            miou = np.nanmean([x[2] for x in agree])
            identical = sum(x[4] for x in agree) / max(sum(x[1] for x in agree), 1)
            unmatched = np.mean([x[5] for x in agree])
            label = keep if keep != "some" else f"some (pred_iou_thresh {cfg.pred_iou_thresh:.4f})"
            print(
                f"| {h}x{w} | {label} | {n:.0f} | {r_ours:.3f} | {r_off:.3f} | {r_ours / r_off:.2f} | "
                f"{cpu_ratio:.2f} | {miou:.4f} | {identical:.1%} | {unmatched:.1f} |",
                flush=True,
            )
    tmp.cleanup()


def iou_percentile(cfg, image: np.ndarray, device: str, q: float) -> float:
    """The q-th percentile of the model's predicted IoUs on one image (all masks kept)."""
    from labeler.segment.sam2_amg import Sam2MaskBackend

    scores = Sam2MaskBackend(cfg, device=device).masks(image).scores
    return float(np.percentile(scores, q)) if len(scores) else 0.0


def timed(fn, device) -> tuple[np.ndarray, tuple[float, float]]:
    """fn(), (wall seconds, CPU seconds of this process)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def describe(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, load average {load:.1f} at start"
    )


if __name__ == "__main__":
    main()
