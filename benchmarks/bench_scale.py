"""How each dataset operation's cost grows with the dataset: fabricated records and tiny arrays at 10^3, 10^4
and 10^5 samples, written through the dataset's write path (labeler/dataset/writer.py), then timed:

- open (`open_dataset`), `ds[i]` at row 10 and at the last row (first access loads the shard index),
- append one shard (arrays + tables + shard index entry + manifest), resume planning over every sample,
- validate per sample (the dataset-wide checks, plus the per-shard checks of 20 shards), gallery build,
- bytes and file counts of every metadata file.

Growth = cost at 10^5 / cost at 10^3 (per operation; per sample for the O(N) ones). Part 2 (`--real N`)
labels N small pairs with `labeler pseudo-label` (sgbm + classical), re-runs it with nothing new, appends 64
pairs, and labels the same 64 into a new dataset.

    .venv/bin/python benchmarks/bench_scale.py --sizes 1000 10000 100000 [--real 1000]
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

H, W, PER_SHARD, OBJECTS = 16, 16, 32, 3


def _shard_payload(shard: int, rng: np.random.Generator):
    from data_schema.manifest import ObjectRow, SampleRecord, SampleStats, SourceFiles
    from labeler.dataset.shards import SampleArrays
    from labeler.depth import object_records, sample_stats

    rows, records, objects = {}, [], []
    for k in range(PER_SHARD):
        row = shard * PER_SHARD + k
        sid = f"cap_{row:07d}"
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        disp = rng.uniform(5, 20, (H, W)).astype(np.float32)
        depth = (30.0 / disp).astype(np.float32)
        ids = np.zeros((H, W), np.uint16)
        for o in range(OBJECTS):
            ids[o * 5 : o * 5 + 4, 2:12] = o + 1
        arrays = SampleArrays(img, img, disp, depth, np.ones((H, W), np.float32), ids)
        objs = object_records(ids, depth, np.full(OBJECTS, 0.9, np.float32))
        rows[row] = arrays
        records.append(
            SampleRecord(
                sample_id=sid,
                row=row,
                status="ok",
                source=SourceFiles(
                    left_path=f"l/{sid}.png",
                    right_path=f"r/{sid}.png",
                    left_sha256="0" * 64,
                    right_sha256="0" * 64,
                ),
                digests=arrays.digests(),
                stats=sample_stats(depth, arrays.confidence, len(objs)),
                seconds=0.1,
                device="cpu",
            )
        )
        assert isinstance(records[-1].stats, SampleStats)
        objects += [ObjectRow(sample_id=sid, row=row, **o.model_dump()) for o in objs]
    return rows, records, objects


def shard_plan(shard: int):
    from data_schema.manifest import ShardPlan

    start = shard * PER_SHARD
    return ShardPlan(
        shard=shard, row_start=start, sample_ids=[f"cap_{r:07d}" for r in range(start, start + PER_SHARD)]
    )


def write_one_shard(ds: Path, shard: int, layout, key: str, rng, writer) -> None:
    """A shard's write task (arrays + table files) and its commit by the writer (index line, compaction)."""
    from labeler.dataset.task_io import write_shard_files

    rows, records, objects = _shard_payload(shard, rng)
    writer.commit(write_shard_files(ds, shard, layout, key, records, objects, rows))


def fabricate(ds: Path, n: int):
    """A dataset of n samples through the dataset's write path (DatasetWriter), as a run writes it."""
    from data_schema.backends import ClassicalMasksConfig, SgbmConfig
    from data_schema.manifest import Manifest, ObjectPolicy
    from labeler.dataset.runkey import run_key
    from labeler.dataset.writer import DatasetWriter
    from labeler.depth import depth_settings
    from labeler.rig.calibration import load_calibration
    from tests.conftest import identity_calibration_yaml

    calib_path = identity_calibration_yaml(ds.parent / "calib.yaml", W, H)
    calib = load_calibration(calib_path)
    n_shards = n // PER_SHARD
    layout = DatasetWriter.layout(n_shards * PER_SHARD + 4 * PER_SHARD, H, W, PER_SHARD)
    depth = depth_settings(calib, z_far_m=20.0)
    key = run_key(SgbmConfig(), ClassicalMasksConfig(), "0" * 64, depth, PER_SHARD, ObjectPolicy())
    base = Manifest(
        dataset_version=key,
        labeler_version="bench",
        calibration=calib,
        calibration_sha256="0" * 64,
        depth=depth,
        stereo=SgbmConfig(),
        masks=ClassicalMasksConfig(),
        run_key=key,
        library_versions={},
        layout=layout,
    )
    ds.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with DatasetWriter(ds) as writer:
        layout = writer.begin(base, [shard_plan(s) for s in range(n_shards)], {})
        for s in range(n_shards):
            write_one_shard(ds, s, layout, key, rng, writer)
        writer.finish()
    return base, layout, key, calib_path


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(n: int, work: Path) -> dict[str, float]:
    from labeler import open_dataset
    from labeler.dataset.validate import dataset_problems, shard_problems
    from labeler.dataset.writer import DatasetWriter, seal_manifest
    from labeler.review.gallery import write_gallery

    ds = work / f"ds-{n}"
    t0 = time.perf_counter()
    base, layout, key, _ = fabricate(ds, n)
    build = time.perf_counter() - t0
    out: dict[str, float] = {"build_s": build}
    out["open_ms"] = 1e3 * timed(lambda: open_dataset(ds))
    out["len_ms"] = 1e3 * timed(lambda: len(open_dataset(ds)))
    out["first_item_ms"] = 1e3 * timed(lambda: open_dataset(ds)[len(open_dataset(ds)) - 1])
    r = open_dataset(ds)
    r[0]
    out["item_row10_ms"] = 1e3 * timed(lambda: r[10], 20)
    out["item_last_ms"] = 1e3 * timed(lambda: r[len(r) - 1], 20)
    rng = np.random.default_rng(1)
    n_shards = n // PER_SHARD
    with DatasetWriter(ds) as writer:
        appended = 3  # the shards the timing below appends, planned as a run plans its new rows
        writer.begin(base, [shard_plan(n_shards + k) for k in range(appended)], writer.committed())

        def append_one() -> None:
            nonlocal n_shards
            write_one_shard(ds, n_shards, layout, key, rng, writer)
            n_shards += 1

        # a shard's commit (arrays, tables, its shard-index line) and, once per run, sealing the manifest
        out["append_shard_ms"] = 1e3 * timed(append_one, appended)
        out["seal_per_run_ms"] = 1e3 * timed(lambda: seal_manifest(ds, base, writer.committed()), 3)
    out["resume_plan_ms"] = 1e3 * timed(lambda: _plan(ds, key), 3)
    t = time.perf_counter()
    problems, manifest, entries = dataset_problems(ds)
    wide = time.perf_counter() - t
    assert not problems, problems[:3]
    step = max(1, len(entries) // 20)
    picked = entries[::step][:20]
    t = time.perf_counter()
    for e in picked:
        assert not shard_problems(ds, e, manifest)
    per_shard = (time.perf_counter() - t) / len(picked)
    out["validate_us_per_sample"] = 1e6 * (wide / (len(entries) * PER_SHARD) + per_shard / PER_SHARD)
    t = time.perf_counter()
    write_gallery(ds)
    out["gallery_us_per_sample"] = 1e6 * (time.perf_counter() - t) / (len(entries) * PER_SHARD)
    for name in ("manifest.json", "shards.jsonl", "rows.jsonl"):
        out[f"bytes_{name}"] = (ds / name).stat().st_size
    tables = list((ds / "tables").rglob("*.parquet"))
    out["bytes_tables"] = sum(p.stat().st_size for p in tables)
    out["files_tables"] = len(tables)
    shutil.rmtree(ds)
    return out


def _plan(ds: Path, key: str) -> None:
    """Resume planning with every sample already done: the row plan, the index, the cheap store checks and
    one scan of the samples table (inputs given as the known ids, so no input folder is read)."""
    from labeler.dataset.writer import DatasetWriter
    from pipelines import plan as planning

    with DatasetWriter(ds) as writer:
        ids = [sid for p in writer.row_plan().values() for sid in p.sample_ids]
    fake = {sid: planning.LabelTask(sample_id=sid, row=0, left_path="l", right_path="r") for sid in ids}
    real = planning.discover_inputs
    planning.discover_inputs = lambda cfg, **kw: fake  # type: ignore[assignment]
    try:
        from data_schema.commands import PseudoLabelConfig

        cfg = PseudoLabelConfig(
            inputs=ds, calib=ds.parent / "calib.yaml", out=ds, samples_per_shard=PER_SHARD
        )
        with DatasetWriter(ds) as writer:
            p = planning.plan_run(cfg, key, writer)
        assert not p.todo, f"{len(p.todo)} shards planned on a finished dataset"
    finally:
        planning.discover_inputs = real


def real_runs(n: int, work: Path) -> None:
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(work / "rect", n, 64, 48, seed=3)
    write_plane_pairs(work / "more", 64, 64, 48, seed=4)
    calib = identity_calibration_yaml(work / "calib.yaml", 64, 48)

    def label(inputs: Path, out: Path) -> float:
        t = time.perf_counter()
        run_pseudo_label(
            PseudoLabelConfig(inputs=inputs, calib=calib, out=out, scheduler="sync", progress=False)
        )
        return time.perf_counter() - t

    first = label(work / "rect", work / "ds")
    noop = label(work / "rect", work / "ds")
    for side in ("left", "right"):
        for p in sorted((work / "more" / side).iterdir()):
            shutil.copy(p, work / "rect" / side / f"zz_{p.name}")
    append = label(work / "rect", work / "ds")
    fresh_dir = work / "fresh"
    for side in ("left", "right"):
        (fresh_dir / side).mkdir(parents=True)
        for p in sorted((work / "more" / side).iterdir()):
            shutil.copy(p, fresh_dir / side / f"zz_{p.name}")
    fresh = label(fresh_dir, work / "ds-fresh")
    print(f"\nreal run, {n} pairs 64x48 (sgbm + classical, sync):")
    print("| operation | seconds | ratio |\n|---|---|---|")
    print(f"| label {n} pairs into a new dataset | {first:.1f} | 1 |")
    print(f"| re-run with nothing new (resume) | {noop:.2f} | {noop / first:.3f} of labelling |")
    print(
        f"| append 64 new pairs to the {n} | {append:.2f} | {append / fresh:.2f} × labelling the 64 alone |"
    )
    print(f"| label the same 64 into a new dataset | {fresh:.2f} | 1 |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--real", type=int, default=0, help="also label this many real small pairs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        results = {n: measure(n, work) for n in args.sizes}
        keys = list(results[args.sizes[0]])
        lo, hi = args.sizes[0], args.sizes[-1]
        print("| measure | " + " | ".join(f"{n:,}" for n in args.sizes) + f" | growth {lo:,}→{hi:,} |")
        print("|---|" + "---|" * (len(args.sizes) + 1))
        for k in keys:
            vals = [results[n][k] for n in args.sizes]
            growth = vals[-1] / vals[0] if vals[0] else float("nan")
            print(f"| {k} | " + " | ".join(f"{v:,.3g}" for v in vals) + f" | {growth:.2f} |")
        if args.real:
            real_runs(args.real, work / "real")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
