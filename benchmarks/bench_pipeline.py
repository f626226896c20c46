"""CPU pipeline overhead and Zarr storage speed, each as a ratio against a bare baseline in this process.

1. pairs/s of `run_pseudo_label` (sgbm + classical, sync scheduler and a LocalCluster) against a bare loop
   of the same backend calls + depth + instance map on the same pairs (overhead = bare time / pipeline time).
2. Zarr v3 write/read MB/s of the dataset arrays (sharded, with the codec labeler uses and alternatives)
   against raw np.save / np.load of the same arrays; compressed size for each.

    .venv/bin/python benchmarks/bench_pipeline.py [--pairs 16] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_pairs(folder: Path, n: int, width: int, height: int) -> Path:
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(folder / "rect", n, width, height, seed=11)
    return identity_calibration_yaml(folder / "calib.yaml", width, height)


def bare_loop(folder: Path) -> float:
    """The same work with no pipeline: read PNGs, backends, depth, instance map, object table."""
    from data_schema.backends import ClassicalMasksConfig, SgbmConfig
    from data_schema.manifest import DepthSettings
    from labeler.depth import disparity_to_depth, instance_map, object_records
    from labeler.io import read_rgb
    from labeler.segment.classical import ClassicalMaskBackend
    from labeler.stereo.sgbm import SgbmBackend

    stereo, masks = SgbmBackend(SgbmConfig()), ClassicalMaskBackend(ClassicalMasksConfig())
    settings = DepthSettings(fx_px=300.0, baseline_m=0.1, doffs_px=0.0, z_far_m=20.0)
    start = time.perf_counter()
    for left_path in sorted((folder / "rect" / "left").iterdir()):
        left, right = read_rgb(left_path), read_rgb(folder / "rect" / "right" / left_path.name)
        d = stereo.disparity(left, right)
        m = masks.masks(left, disparity_px=d.disparity_px)
        depth = disparity_to_depth(d.disparity_px, settings)
        ids, src = instance_map(m.masks, m.scores)
        object_records(ids, depth, m.scores[src], None)
    return time.perf_counter() - start


def pipeline(folder: Path, calib: Path, scheduler: str, workers: int | None = None) -> float:
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label

    out = folder / f"ds-{scheduler}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=folder / "rect",
            calib=calib,
            out=out,
            scheduler=scheduler,
            workers=workers,
            progress=False,
            previews=False,
        )
    )
    return time.perf_counter() - start


def storage(folder: Path, n: int, width: int, height: int) -> list[tuple[str, float, float, float]]:
    """(codec, write MB/s, read MB/s, stored MB) for zarr codecs and np.save, on realistic arrays."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    from labeler.dataset.shards import DEFAULT_SAMPLES_PER_SHARD
    from labeler.testing.scenes import box_pair

    rng = np.random.default_rng(0)
    lefts = np.stack([box_pair(rng, width, height).left for _ in range(n)])
    yy, xx = np.mgrid[0:height, 0:width]
    depth = np.stack(
        [
            (1.0 + 0.001 * xx + 0.002 * yy + rng.normal(0, 0.01, (height, width))).astype(np.float32)
            for _ in range(n)
        ]
    )
    depth[:, :, :20] = np.nan
    arrays = {"left": lefts, "depth_m": depth}
    mb = sum(a.nbytes for a in arrays.values()) / 1e6
    rows = []

    def du(path: Path) -> float:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6

    codecs = {
        "blosc-zstd-3-shuffle (labeler)": (BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),),
        "blosc-zstd-1-shuffle": (BloscCodec(cname="zstd", clevel=1, shuffle=BloscShuffle.shuffle),),
        "zstd-3": (ZstdCodec(level=3),),
        "blosc-lz4-5-shuffle": (BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),),
        "none": None,
    }
    s = DEFAULT_SAMPLES_PER_SHARD
    for name, comp in codecs.items():
        root = folder / f"z-{name.split()[0]}"
        shutil.rmtree(root, ignore_errors=True)
        group = zarr.open_group(root, mode="w", zarr_format=3)
        t0 = time.perf_counter()
        for key, a in arrays.items():
            arr = group.create_array(
                key,
                shape=a.shape,
                chunks=(1, *a.shape[1:]),
                shards=(s, *a.shape[1:]),
                dtype=a.dtype,
                compressors=comp,
            )
            arr[:] = a
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        for key in arrays:  # read sample by sample, as the training reader does
            arr = zarr.open_group(root, mode="r")[key]
            for i in range(n):
                arr[i]
        t_read = time.perf_counter() - t0
        rows.append((name, mb / t_write, mb / t_read, du(root)))
    root = folder / "npy"
    root.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for key, a in arrays.items():
        for i in range(n):
            np.save(root / f"{key}_{i}.npy", a[i])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    for key in arrays:
        for i in range(n):
            np.load(root / f"{key}_{i}.npy")
    rows.append(("np.save/np.load (baseline)", mb / t_write, mb / (time.perf_counter() - t0), du(root)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        calib = make_pairs(folder, args.pairs, args.width, args.height)
        bare_loop(folder)  # warm caches (imports, first-call costs) so neither side pays them
        t_bare = bare_loop(folder)
        t_sync = pipeline(folder, calib, "sync")
        t_local = pipeline(folder, calib, "processes", workers=2)
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster),
        ):
            pipeline(folder, calib, cluster.scheduler_address)  # warm the workers (imports, backends)
            t_warm = pipeline(folder, calib, cluster.scheduler_address)
        n = args.pairs
        print(f"pipeline, {n} pairs {args.width}x{args.height}, sgbm + classical:")
        print(f"  bare loop of the same calls      {n / t_bare:6.2f} pairs/s")
        print(f"  pipeline, sync scheduler         {n / t_sync:6.2f} pairs/s   ratio {t_bare / t_sync:.2f}")
        print(
            f"  pipeline, LocalCluster 2 procs   {n / t_local:6.2f} pairs/s   ratio {t_bare / t_local:.2f}"
            " (includes cluster start-up)"
        )
        print(
            f"  pipeline, running 2-proc cluster {n / t_warm:6.2f} pairs/s   ratio {t_bare / t_warm:.2f}"
            " (--scheduler tcp://…, workers warm)"
        )
        print(f"storage, {n} samples (left uint8 + depth_m float32):")
        print(f"  {'codec':32s} {'write MB/s':>10s} {'read MB/s':>10s} {'stored MB':>10s}")
        for name, w, r, size in storage(folder, n, args.width, args.height):
            print(f"  {name:32s} {w:10.1f} {r:10.1f} {size:10.2f}")


if __name__ == "__main__":
    main()
