"""Does the GPU wait on the CPU? The pseudo-label graph with a stand-in stereo backend that only sleeps a
fixed "GPU time" per batch (registered here, never in the product), on a cluster whose worker advertises
GPU=1.

Pipeline efficiency = (stand-in time x batches) / wall time of the graph, previews on. With the model call
the only GPU task, loading, masks (classical, CPU), depth, objects, previews and shard writes run on the
worker's other threads while the next batch "runs on the GPU"; with one thread (the baseline, same graph)
everything queues behind the model calls.

    .venv/bin/python benchmarks/bench_gpu_overlap.py [--pairs 64] [--batch 4] [--gpu-seconds 0.25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_schema.record import Record  # noqa: E402
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend  # noqa: E402


class StandInConfig(Record):
    name: Literal["bench-gpu-standin"] = "bench-gpu-standin"
    seconds_per_batch: float = 0.25
    disparity_px: float = 8.0


@STEREO_BACKENDS.register
class StandInBackend(StereoBackend[StandInConfig]):
    """Sleeps like a GPU forward (releasing the GIL, as CUDA does), returns a constant disparity."""

    config_type = StandInConfig
    uses_cuda = True

    def __init__(self, config: StandInConfig, *, device: str = "cpu") -> None:
        self.config = config

    def disparity(self, left: np.ndarray, right: np.ndarray) -> Disparity:
        return self.disparity_many([(left, right)])[0]

    def disparity_many(self, pairs):  # type: ignore[no-untyped-def]
        time.sleep(self.config.seconds_per_batch)
        calls.append(time.perf_counter())
        h, w = pairs[0][0].shape[:2]
        d = np.full((h, w), self.config.disparity_px, np.float32)
        return [Disparity(disparity_px=d.copy(), confidence=np.ones((h, w), np.float32)) for _ in pairs]


calls: list[float] = []


def run_graph(
    folder: Path, calib: Path, out: Path, *, threads: int, batch: int, gpu_s: float
) -> tuple[float, int]:
    from distributed import Client, LocalCluster

    from data_schema.commands import PseudoLabelConfig
    from labeler.dataset import shards
    from labeler.depth import depth_settings
    from labeler.rig.calibration import load_calibration
    from pipelines.graph import build_graph
    from pipelines.plan import plan_run

    valid = PseudoLabelConfig(
        inputs=folder, calib=calib, out=out, batch_size=batch, gpus=(0,), progress=False
    )
    # the stand-in is not in the product's config union: build the config without validation
    cfg = PseudoLabelConfig.model_construct(
        **{**dict(valid), "stereo": StandInConfig(seconds_per_batch=gpu_s)}
    )
    calib_rec = load_calibration(calib)
    settings = depth_settings(calib_rec, z_far_m=20.0)
    plan = plan_run(cfg, "bench")
    w, h = calib_rec.image_size
    layout = shards.store_layout(plan.n_rows, h, w, cfg.samples_per_shard)
    out.mkdir(parents=True)
    shards.prepare_store(out, layout)
    writes = build_graph(cfg, plan.todo, layout, "bench", settings, (w, h))
    n_batches = sum(-(-len(items) // batch) for items in plan.todo.values())
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=threads,
            processes=False,
            resources={"GPU": 1},
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: None)  # warm
        calls.clear()
        start = time.perf_counter()
        for f in client.compute(list(writes.values())):
            f.result()
        wall = time.perf_counter() - start
    assert len(calls) == n_batches, (len(calls), n_batches)
    return wall, n_batches


def main() -> None:
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gpu-seconds", type=float, default=0.25, help="stand-in GPU time per batch")
    ap.add_argument("--threads", type=int, default=4, help="worker threads (one holds the GPU)")
    ap.add_argument("--size", default="128x96")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench-overlap-"))
    write_plane_pairs(work / "rect", args.pairs, w, h, seed=5)
    calib = identity_calibration_yaml(work / "calib.yaml", w, h)
    print(
        f"{args.pairs} pairs {w}x{h}, batches of {args.batch}, stand-in GPU {args.gpu_seconds} s/batch, "
        "previews on"
    )
    print("| worker | wall s | GPU busy s | efficiency |\n|---|---|---|---|")
    for threads in (1, args.threads):
        wall, n = run_graph(
            work / "rect",
            calib,
            work / f"ds-{threads}",
            threads=threads,
            batch=args.batch,
            gpu_s=args.gpu_seconds,
        )
        busy = n * args.gpu_seconds
        label = "1 thread (no overlap, baseline)" if threads == 1 else f"{threads} threads, GPU=1"
        print(f"| {label} | {wall:.2f} | {busy:.2f} | {busy / wall:.3f} |")


if __name__ == "__main__":
    main()
