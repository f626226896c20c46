"""`--masks sam2 --track`: model seconds per 100 frames against per-frame automatic masks, and the session's
memory over a long chunk with and without releasing what the memory bank no longer reads.

Frames: the demo's moving sequence (labeler/synthetic/sequence.py, left views of sequence/walk.avi) rendered
at --width x --height, its frames repeated forwards and backwards to --frames. Model: the tiny random SAM2
(labeler.testing.sam2_tiny, seed 0) with the colour stand-in encoder and decoder
(labeler.testing.sam2_colour), so the automatic masks find the scene's objects and the official thresholds
apply (points_per_side --points-per-side, pred_iou 0.8, stability 0.95); the memory attention and memory
encoder are the random tiny ones. In one process, on the same frames:
  1. per-frame automatic masks: `Sam2MaskBackend.masks` on every frame (what `--masks sam2` does untracked);
  2. tracked: `Sam2ChunkTracker` with --keyframe-every (automatic masks on keyframes, the official
     SAM2VideoPredictor between), the whole chunk in one call;
  3. memory: the tracked chunk over --memory-frames frames, the session's stored outputs (bytes of every
     tensor held in the predictor's per-object output dicts) after each frame, once with the release
     (labeler) and once keeping every frame (the official session's behaviour), plus the process's peak RSS.

    .venv/bin/python benchmarks/bench_sam2_track.py [--frames 100 --keyframe-every 10 --memory-frames 1000]
    # a real checkpoint on a GPU (no colour stand-in; CUDA timings include a synchronise per frame's masks):
    .venv/bin/python benchmarks/bench_sam2_track.py --device cuda --config sam2.1_hiera_l \
        --checkpoint ~/ckpt/sam2.1_hiera_large.pt --width 1280 --height 800 --frames 100 --memory-frames 1000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_frames(width: int, height: int, n: int) -> list[np.ndarray]:
    """The demo sequence's left views, played forwards and backwards up to n frames."""
    import cv2

    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence

    tmp = Path(tempfile.mkdtemp(prefix="bench-sam2-track-"))
    write_demo_sequence(
        tmp, SyntheticRig.rectified(width, height, focal_px=0.78 * width), n_frames=32, still_frames=0
    )
    cap = cv2.VideoCapture(str(tmp / "sequence" / "walk.avi"))
    base = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        base.append(np.ascontiguousarray(bgr[:, :width, ::-1]))
    loop = base + base[-2:0:-1]
    return [loop[k % len(loop)] for k in range(n)]


def state_bytes(state: dict) -> int:
    import torch

    total = 0

    def walk(x: object) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(state["output_dict_per_obj"])
    return total


def main() -> None:
    import torch

    from labeler.segment.sam2_amg import Sam2MaskBackend
    from labeler.testing.sam2_colour import use_colour_network
    from labeler.testing.sam2_tiny import write_tiny_sam2

    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--keyframe-every", type=int, default=10)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--memory-frames", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU run")
    ap.add_argument("--config", default=None, help="a released config (sam2.1_hiera_l); default: the tiny")
    ap.add_argument("--checkpoint", default=None, help="its checkpoint (with --config)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from data_schema.backends import Sam2Config

    if args.config is None:
        config, ckpt = write_tiny_sam2(Path(tempfile.mkdtemp(prefix="tiny-sam2-")))
    else:
        config, ckpt = args.config, Path(args.checkpoint)
    backend = Sam2MaskBackend(
        Sam2Config(checkpoint=ckpt, config=str(config), points_per_side=args.points_per_side),
        device=args.device,
    )
    if args.config is None:
        use_colour_network(backend.model)
    frames = demo_frames(args.width, args.height, max(args.frames, args.memory_frames))
    backend.masks(frames[0])  # warm-up

    print(
        f"{args.frames} frames {args.width}x{args.height}, points_per_side {args.points_per_side}, "
        f"keyframe every {args.keyframe_every}, torch threads {args.threads}, {args.device}",
        flush=True,
    )
    print("| figure | value |\n|---|---|", flush=True)
    if args.frames:
        speed(backend, frames[: args.frames], args.keyframe_every)
    if args.memory_frames:
        memory(backend, frames[: args.memory_frames], args.keyframe_every)


def speed(backend, frames: list[np.ndarray], every: int) -> None:
    from data_schema.manifest import TrackingConfig
    from labeler.segment import sam2_video

    t = time.perf_counter()
    per_frame = [backend.masks(f) for f in frames]
    t_amg = time.perf_counter() - t
    tracker = sam2_video.Sam2ChunkTracker(backend, tracking=TrackingConfig(keyframe_every=every))
    t = time.perf_counter()
    tracked = tracker.run(frames)
    t_track = time.perf_counter() - t
    per100 = 100 / len(frames)
    print(f"| per-frame automatic masks, model s / 100 frames | {t_amg * per100:.2f} |")
    print(f"| --track --keyframe-every {every}, model s / 100 frames | {t_track * per100:.2f} |")
    print(f"| per-frame / tracked (goal >= 4) | {t_amg / t_track:.2f} |")
    print(f"| keyframes | {len(tracker.keyframes)} ({tracker.keyframes[:12]}) |")
    n_amg, n_tr = np.mean([len(m) for m in per_frame]), np.mean([len(m) for m in tracked])
    print(f"| masks per frame: automatic / tracked | {n_amg:.1f} / {n_tr:.1f} |", flush=True)


def memory(backend, frames: list[np.ndarray], every: int) -> None:
    from data_schema.manifest import TrackingConfig
    from labeler.segment import sam2_video

    def run(release: bool) -> tuple[int, int, int]:
        """(peak stored bytes, stored bytes at the end, most frame outputs one object held)."""
        peak = [0, 0]
        tr = sam2_video.Sam2ChunkTracker(backend, tracking=TrackingConfig(keyframe_every=every))
        if not release:
            tr.window = 10**9  # keep every frame, as the official session does
        real = tr._release

        def measured(state: dict, pos: int) -> None:
            real(state, pos)
            b = state_bytes(state)
            peak[0], peak[1] = max(peak[0], b), b

        tr._release = measured  # type: ignore[method-assign]
        tr.run(frames)
        return peak[0], peak[1], tr.stored_frames

    mib = 2**20
    n = len(frames)
    kept = run(True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    k0, k1 = kept[0] / mib, kept[1] / mib
    print(f"| session outputs over {n} frames, released: peak / end, MiB | {k0:.2f} / {k1:.2f} |")
    print(f"| process peak RSS after the released run, MiB | {rss:.0f} |", flush=True)
    grown = run(False)
    g0, g1 = grown[0] / mib, grown[1] / mib
    print(f"| the same, every frame kept (official session): peak / end, MiB | {g0:.2f} / {g1:.2f} |")
    print(f"| most frame outputs one object held: released / kept | {kept[2]} / {grown[2]} |", flush=True)


if __name__ == "__main__":
    main()
