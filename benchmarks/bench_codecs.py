"""Which compressor for the dataset arrays: write MB/s, read MB/s and size together, against np.save/np.load
of the same arrays in the same process (issue 13: goal write >= 0.5x np.save at <= 75 % of the raw size).

The arrays are a real dataset's (default: `make dataset`'s datasets/demo, six arrays per sample as stored),
written one shard at a time through zarr's sharding codec as labeler/dataset/shards.py lays them out; each
codec is tried with Blosc on 1 and 2 threads and zarr's codec thread pool on 1 and 2 workers.

    .venv/bin/python benchmarks/bench_codecs.py [--dataset datasets/demo] [--samples 32]
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


def load_arrays(dataset: Path, n: int) -> dict[str, np.ndarray]:
    from labeler import open_dataset
    from labeler.dataset.shards import SampleArrays

    ds = open_dataset(dataset)
    samples = [ds[i % len(ds)] for i in range(n)]
    names = SampleArrays.__dataclass_fields__.keys()
    return {k: np.stack([getattr(s, k) for s in samples]) for k in names}


def codecs() -> dict[str, tuple]:
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    return {
        "blosc-zstd-3-shuffle": (BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),),
        "blosc-zstd-1-shuffle": (BloscCodec(cname="zstd", clevel=1, shuffle=BloscShuffle.shuffle),),
        "blosc-lz4-5-shuffle": (BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),),
        "blosc-lz4-5-bitshuffle": (BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle),),
        "blosc-lz4hc-3-shuffle": (BloscCodec(cname="lz4hc", clevel=3, shuffle=BloscShuffle.shuffle),),
        "zstd-1": (ZstdCodec(level=1),),
        "none": (),
    }


def write_read(root: Path, arrays: dict[str, np.ndarray], comp: tuple) -> tuple[float, float, int]:
    import zarr

    shutil.rmtree(root, ignore_errors=True)
    group = zarr.open_group(root, mode="w", zarr_format=3)
    t0 = time.perf_counter()
    for key, a in arrays.items():
        arr = group.create_array(
            key,
            shape=a.shape,
            chunks=(1, *a.shape[1:]),
            shards=a.shape,
            dtype=a.dtype,
            compressors=comp or None,
            fill_value=np.nan if a.dtype.kind == "f" else 0,
        )
        arr[:] = a  # one region write per array: the shard writer's pattern
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = zarr.open_group(root, mode="r")
    for key in arrays:  # sample by sample, as the reader does
        arr = g[key]
        for i in range(arrays[key].shape[0]):
            arr[i]
    t_read = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return t_write, t_read, size


def npy(root: Path, arrays: dict[str, np.ndarray]) -> tuple[float, float, int]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    t0 = time.perf_counter()
    for key, a in arrays.items():
        for i in range(a.shape[0]):
            np.save(root / f"{key}_{i}.npy", a[i])
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    for key, a in arrays.items():
        for i in range(a.shape[0]):
            np.load(root / f"{key}_{i}.npy")
    return t_write, time.perf_counter() - t0, sum(p.stat().st_size for p in root.iterdir())


def main() -> None:
    import numcodecs
    import zarr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=Path("datasets/demo"))
    ap.add_argument("--samples", type=int, default=32, help="one shard")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    arrays = load_arrays(args.dataset, args.samples)
    raw = sum(a.nbytes for a in arrays.values())
    work = Path(tempfile.mkdtemp(prefix="bench-codecs-"))
    try:
        base = [npy(work / "npy", arrays) for _ in range(args.repeat)]
        bw, br = min(b[0] for b in base), min(b[1] for b in base)
        print(
            f"{args.samples} samples of {args.dataset} ({raw / 1e6:.1f} MB raw); "
            f"np.save {raw / bw / 1e6:.0f} MB/s, np.load {raw / br / 1e6:.0f} MB/s (baseline, same process)"
        )
        head = "| codec | blosc threads | zarr workers | write MB/s | × np.save | read MB/s | × np.load |"
        print(head + " size % raw |")
        print("|---|---|---|---|---|---|---|---|")
        for name, comp in codecs().items():
            for threads in (1, 2):
                for workers in (1, 2):
                    if (not name.startswith("blosc")) and threads == 2:
                        continue
                    numcodecs.blosc.set_nthreads(threads)
                    with zarr.config.set({"threading.max_workers": workers}):
                        runs = [write_read(work / "z", arrays, comp) for _ in range(args.repeat)]
                    w, r, size = min(x[0] for x in runs), min(x[1] for x in runs), runs[0][2]
                    print(
                        f"| {name} | {threads} | {workers} | {raw / w / 1e6:.0f} | {bw / w:.2f} | "
                        f"{raw / r / 1e6:.0f} | {br / r:.2f} | {100 * size / raw:.0f} |"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
