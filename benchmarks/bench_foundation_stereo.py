#!/usr/bin/env python
"""Benchmark labeler's FoundationStereo: pairs/s, float32 vs mixed precision, and the official code.

    python benchmarks/bench_foundation_stereo.py --device cuda                      # the full grid
    python benchmarks/bench_foundation_stereo.py --device cpu --vit vits --sizes 64x96 --iters 2 --repeats 1
    python benchmarks/bench_foundation_stereo.py --device cuda --foundation-stereo-src ~/FoundationStereo

For each ViT size, image size (H x W, multiples of 32) and `valid_iters`, it times the network's forward
pass on one rectified pair (batch `--batch`), float32 and, on CUDA, under bf16 autocast (the backend's
mixed-precision path), and reports the disparity difference of the autocast path against float32
(EPE: mean |diff| px; bad-1: % of pixels off by more than 1 px). With `--foundation-stereo-src` (a
checkout of NVIDIA's release) it also times the official model, loaded from the same checkpoint, on the
same inputs in the same process, and reports the time ratio and max |diff| of the disparities.

Timings do not depend on the weights' values, so without `--weights` the checkpoints are the project's
deterministic releases (`labeler.testing.foundation_stereo_release`, random-like weights), built into a
temporary folder. The input pair is the parity vectors' 160x224 pair (tests/models/data) resized to each
size (a texture if that is absent).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "models" / "data"
PAIR = tuple(DATA / f"foundation_stereo_{side}_160x224.png" for side in ("left", "right"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vit", nargs="+", default=["vits", "vitl"], choices=["vits", "vitl"])
    p.add_argument("--sizes", nargs="+", default=["480x640", "800x1280"], help="HxW, multiples of 32")
    p.add_argument("--iters", nargs="+", type=int, default=[32, 16], help="valid_iters values")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=1, help="pairs per forward pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument(
        "--weights",
        nargs="*",
        default=[],
        metavar="VIT=PATH",
        help="e.g. vitl=~/ckpt/23-51-11/model_best_bp2.pth",
    )
    p.add_argument(
        "--foundation-stereo-src", type=Path, default=None, help="official checkout to time as well"
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------- inputs and models


def make_pair(h: int, w: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(batch, H, W, 3) uint8 left and right."""
    import cv2

    if all(path.is_file() for path in PAIR):
        imgs = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in PAIR]
        left, right = (cv2.resize(im, (w, h), interpolation=cv2.INTER_CUBIC) for im in imgs)
    else:  # a texture shifted by 8 px
        rng = np.random.default_rng(0)
        tex = cv2.GaussianBlur(rng.uniform(0, 255, (h, w + 8, 3)).astype(np.float32), (0, 0), 1.5).astype(
            np.uint8
        )
        left, right = tex[:, 8:], tex[:, :-8]
    return np.stack([left] * batch), np.stack([right] * batch)


def checkpoint_for(vit: str, given: dict[str, Path], tmp: Path) -> Path:
    if vit in given:
        return given[vit]
    from labeler.testing.foundation_stereo_release import cached_release

    return cached_release(vit, tmp / vit)


@contextmanager
def official_import_shims(src: Path) -> Iterator[None]:
    """Let the release's code build offline: no weight downloads, DINOv2 from its own folder, and
    stand-ins for packages its modules import but inference does not use."""
    import timm
    import torch

    for name in ("open3d", "trimesh", "pandas", "joblib", "einops", "imageio"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.rearrange = None  # type: ignore[attr-defined]
            sys.modules[name] = stub
    sys.path.insert(0, str(src))
    create, hub_load = timm.create_model, torch.hub.load
    timm.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})
    torch.hub.load = lambda _repo, model, *a, **k: hub_load(  # type: ignore[assignment]
        str(src / "dinov2"), model, *a, **{**k, "source": "local", "pretrained": False}
    )
    try:
        yield
    finally:
        timm.create_model, torch.hub.load = create, hub_load


def load_official(src: Path, weights: Path, device: str) -> Callable[..., object]:
    import torch
    import yaml

    class Args(dict):  # the release reads its config both as attributes and with .get
        __getattr__ = dict.__getitem__

    with official_import_shims(src):
        module = importlib.import_module("core.foundation_stereo")
        cfg = yaml.safe_load((weights.parent / "cfg.yaml").read_text())
        cfg.setdefault("vit_size", "vitl")
        cfg["mixed_precision"] = False  # the enclosing autocast decides, as in the demo
        model = module.FoundationStereo(Args(cfg))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    return model.to(device).eval()


# ---------------------------------------------------------------- measuring


def timed(fn: Callable[[], object], *, device: str, warmup: int, repeats: int) -> tuple[float, object]:
    """Median seconds of `fn()` and its last output."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    out = None
    for _ in range(warmup):
        out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def device_name(device: str, threads: int) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"CPU {cpu}, {threads} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    import torch

    from labeler.models.foundation_stereo import load_foundation_stereo

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    amp_dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    given = {k: Path(v).expanduser() for k, v in (item.split("=", 1) for item in args.weights)}
    print(
        f"device: {device_name(args.device, torch.get_num_threads())}; batch {args.batch}; "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    given_args = sys.argv[1:] if argv is None else argv
    print(f"command: python benchmarks/bench_foundation_stereo.py {' '.join(given_args)}")
    header = "| vit | size | iters | fp32 pairs/s | amp pairs/s | amp vs fp32 EPE px | bad-1 % |"
    if args.foundation_stereo_src:
        header += " official fp32 pairs/s | ours/official speed | max abs diff px |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for vit in args.vit:
            weights = checkpoint_for(vit, given, Path(tmp))
            ours = load_foundation_stereo(weights, device=args.device)
            official = (
                load_official(args.foundation_stereo_src, weights, args.device)
                if args.foundation_stereo_src
                else None
            )
            for size in args.sizes:
                h, w = (int(v) for v in size.lower().split("x"))
                left_np, right_np = make_pair(h, w, args.batch)
                left = torch.from_numpy(left_np).permute(0, 3, 1, 2).float().to(args.device)
                right = torch.from_numpy(right_np).permute(0, 3, 1, 2).float().to(args.device)
                for iters in args.iters:
                    kw = {"device": args.device, "warmup": args.warmup, "repeats": args.repeats}
                    t32, d32 = timed(lambda: ours(left, right, iters=iters), **kw)  # noqa: B023
                    row = f"| {vit} | {h}x{w} | {iters} | {args.batch / t32:.3g} |"
                    if cuda:

                        def amp_run() -> object:
                            with torch.autocast("cuda", dtype=amp_dtype):
                                return ours(left, right, iters=iters)  # noqa: B023

                        tamp, damp = timed(amp_run, **kw)
                        diff = (damp.float() - d32).abs()  # type: ignore[union-attr]
                        epe, bad1 = diff.mean().item(), 100 * (diff > 1).float().mean().item()
                        row += f" {args.batch / tamp:.3g} | {epe:.3g} | {bad1:.2f} |"
                    else:
                        row += " n/a (CPU: float32 only) | | |"
                    if official is not None:
                        toff, doff = timed(lambda: official(left, right, iters=iters, test_mode=True), **kw)  # noqa: B023
                        diff_off = (doff.float() - d32).abs().max().item()  # type: ignore[union-attr]
                        row += f" {args.batch / toff:.3g} | {toff / t32:.2f}x | {diff_off:.2g} |"
                    print(row, flush=True)
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
