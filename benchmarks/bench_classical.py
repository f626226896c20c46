"""Classical masks: time per image and quality, and the whole label of a pair against a bare SGBM call.

1. `classical` masks on the Middlebury Motorcycle pair (741x500, scikit-image; disparity from the sgbm
   backend) and on the demo rig scenes of a `make dataset` run (the rectified left view and the stored
   disparity): ms per image (least of --repeats), and quality: per demo object the best mask IoU
   against the rendered truth and the error of the labelled median depth (as benchmarks/eval_accuracy.py
   computes it); on the Motorcycle, the number of proposals, the image share they cover and their depth
   purity (share of a mask's ground-truth disparities within 10 % of the mask's median).
2. The whole label of the Motorcycle pair (`run_pseudo_label` as `labeler pseudo-label` does it on
   rectified pairs: load, sgbm, classical masks, depth, object table, shard write; sync scheduler,
   previews off), marginal per pair ((T(n pairs) - T(1 pair)) / (n - 1)), against one bare OpenCV
   SGBM_3WAY call on the same pair (block 5, the search range the sgbm backend picks), in this process.
   With --schedulers, the same as a user runs it (`default`: the local cluster of threads in this
   process): one full shard plus --cluster-pairs pairs against one full shard, so that both runs end
   with the write of one full shard and the difference is what each further pair of a long run costs.
3. cProfile of the n-pair label: time per stage and the top functions by self time.

    make dataset WORK=/tmp/wc DATASETS=/tmp/dc
    .venv/bin/python benchmarks/bench_classical.py --work /tmp/wc --datasets /tmp/dc

Old code against new: run the same command with PYTHONPATH pointing at a `git worktree` of the older
commit (the benchmark only uses public names, so it runs on either).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOTORCYCLE_CALIB = ROOT / "calib" / "middlebury-motorcycle.yaml"
# (label in the report, [(file name suffix, function name), ...]) of the stages the profile is summed
# over: functions of one stage never call each other, so their cumulative times add up
STAGES = [
    ("load (PNG decode + sha256)", [("stages.py", "load_stage")]),
    ("sgbm backend", [("sgbm.py", "disparity")]),
    ("classical masks", [("classical.py", "masks")]),
    (
        "depth + instance map + objects",
        [("depth.py", "disparity_to_depth"), ("depth.py", "instance_map"), ("depth.py", "object_records")],
    ),
    ("shard write (zarr + tables)", [("shards.py", "write_shard"), ("shards.py", "write_shard_tables")]),
]


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(least wall s, least CPU s of this process, last result) of `repeats` calls: the box is shared,
    the least is the least noisy. CPU time counts every thread (OpenCV's pool too)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), out


def motorcycle_case(repeats: int) -> dict:
    from skimage.data import stereo_motorcycle

    from labeler.segment.classical import ClassicalMaskBackend
    from labeler.stereo.sgbm import SgbmBackend

    left, right, gt = stereo_motorcycle()
    disparity = SgbmBackend().disparity(left, right).disparity_px
    seconds, cpu, out = timed(lambda: ClassicalMaskBackend().masks(left, disparity_px=disparity), repeats)
    masks = out.masks
    purity = []
    for m in masks:
        g = gt[m & np.isfinite(gt)]
        if g.size:
            purity.append(float(np.mean(np.abs(g / np.median(g) - 1) <= 0.1)))
    return {
        "case": "motorcycle 741x500",
        "ms": 1e3 * seconds,
        "cpu_ms": 1e3 * cpu,
        "proposals": len(masks),
        "covered": float(masks.any(axis=0).mean()) if len(masks) else 0.0,
        "purity": float(np.mean(purity)) if purity else 0.0,
    }


def demo_cases(work: Path, datasets: Path, repeats: int) -> list[dict]:
    """One row per demo scene of a `make dataset` run: time, and per truth object IoU + depth error."""
    import cv2

    from labeler import open_dataset
    from labeler.depth import disparity_to_depth, instance_map, object_records
    from labeler.rig.rectify import RectifyMaps
    from labeler.segment.classical import ClassicalMaskBackend
    from labeler.synthetic.demo import load_demo_truth

    ds = open_dataset(datasets / "demo")
    maps = RectifyMaps.from_calibration(ds.manifest.calibration)
    truth = {t.pair_id: t for t in load_demo_truth(work / "demo").scenes}
    rows = []
    for i in range(len(ds)):
        s = ds[i]
        seconds, cpu, out = timed(
            lambda s=s: ClassicalMaskBackend().masks(s.left, disparity_px=s.disparity_px), repeats
        )
        depth = disparity_to_depth(s.disparity_px, ds.manifest.depth)
        ids, src = instance_map(out.masks, out.scores)
        objects = object_records(ids, depth, out.scores[src], None)
        raw_ids = np.load(work / "demo" / "truth" / f"{s.sample_id}.npz")["instance_ids"]
        rect_ids = cv2.remap(raw_ids.astype(np.float32), *maps.left, cv2.INTER_NEAREST).astype(int)
        ious, errors = [], []
        for obj in truth[s.sample_id].objects:
            target = rect_ids == obj.id
            iou, best = max(
                ((np.sum(target & (ids == o.id)) / np.sum(target | (ids == o.id)), o) for o in objects),
                key=lambda t: t[0],
            )
            ious.append(float(iou))
            errors.append(abs(best.depth_m_median / obj.depth_m_median - 1))
        rows.append(
            {
                "case": f"demo {s.sample_id} {s.left.shape[1]}x{s.left.shape[0]}",
                "ms": 1e3 * seconds,
                "cpu_ms": 1e3 * cpu,
                "proposals": len(out.masks),
                "ious": ious,
                "depth_errors": errors,
            }
        )
    return rows


def write_motorcycle_copies(folder: Path, n: int) -> Path:
    """n copies of the Motorcycle pair as rectified pairs `left/mNN.png` + `right/mNN.png` (distinct ids)."""
    from skimage.data import stereo_motorcycle

    from labeler.io import write_png

    left, right, _ = stereo_motorcycle()
    for k in range(n):
        write_png(folder / "left" / f"m{k:02d}.png", left)
        write_png(folder / "right" / f"m{k:02d}.png", right)
    return folder


def label(inputs: Path, out: Path, scheduler: str | None = "sync") -> tuple[float, float]:
    """(wall s, CPU s) of one `run_pseudo_label` of `inputs` into a fresh `out` (CPU: this process)."""
    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label

    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=inputs,
            calib=MOTORCYCLE_CALIB,
            out=out,
            scheduler=scheduler,
            progress=False,
            previews=False,
        )
    )
    return time.perf_counter() - wall, time.process_time() - cpu


def bare_sgbm_seconds(repeats: int) -> tuple[float, float]:
    """One OpenCV SGBM_3WAY call on the colour pair over the range the sgbm backend searches."""
    import cv2
    from skimage.data import stereo_motorcycle

    from labeler.stereo.sgbm import SgbmBackend

    left, right, _ = stereo_motorcycle()
    lo, num = SgbmBackend().search_range(left, right)
    block = 5
    matcher = cv2.StereoSGBM_create(
        minDisparity=lo,
        numDisparities=num,
        blockSize=block,
        P1=8 * 3 * block**2,
        P2=32 * 3 * block**2,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    matcher.compute(left, right)  # warm-up
    wall, cpu, _ = timed(lambda: matcher.compute(left, right), repeats)
    return wall, cpu


def default_run(pairs: int, repeats: int, scheduler: str | None) -> tuple[float, float, float, float]:
    """(marginal wall s per pair, marginal CPU s per pair, bare SGBM wall s, their wall ratio) of `labeler
    pseudo-label` as a user runs it (`scheduler` None: its default; a local cluster of threads from
    IN_PROCESS_BELOW_SAMPLES pairs on): the label of base + `pairs` copies against `base` copies, base =
    one full shard (at least the cluster threshold). Both runs start the same cluster and end with the
    write of one full shard, which nothing overlaps: so their difference is what each further pair of a
    long run costs, its share of the writes included. Alternated with the bare calls."""
    from labeler.dataset.shards import DEFAULT_SAMPLES_PER_SHARD
    from pipelines.cluster import IN_PROCESS_BELOW_SAMPLES

    base = max(IN_PROCESS_BELOW_SAMPLES, DEFAULT_SAMPLES_PER_SHARD)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        few = write_motorcycle_copies(root / "few", base)
        many = write_motorcycle_copies(root / "many", base + pairs)
        label(few, root / "warm", scheduler)
        runs, bares = [], []
        for _ in range(repeats):
            runs.append((label(few, root / "a", scheduler), label(many, root / "b", scheduler)))
            bares.append(bare_sgbm_seconds(3)[0])
    wall = (min(r[1][0] for r in runs) - min(r[0][0] for r in runs)) / pairs
    cpu = (min(r[1][1] for r in runs) - min(r[0][1] for r in runs)) / pairs
    return wall, cpu, min(bares), wall / min(bares)


def whole_label(pairs: int, repeats: int, top: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = write_motorcycle_copies(root / "one", 1)
        many = write_motorcycle_copies(root / "many", pairs)
        label(one, root / "warm")  # imports, first-call caches
        # alternated, with the bare calls between them: a slow spell of the machine hits both sides
        runs, bares = [], []
        for _ in range(repeats):
            runs.append((label(one, root / "ds1"), label(many, root / "dsn")))
            bares.append(bare_sgbm_seconds(3))
        t_one = tuple(min(r[0][i] for r in runs) for i in (0, 1))
        t_many = tuple(min(r[1][i] for r in runs) for i in (0, 1))
        profile = cProfile.Profile()
        profile.enable()
        label(many, root / "dsp")
        profile.disable()
    bare = tuple(min(b[i] for b in bares) for i in (0, 1))
    marginal = tuple((t_many[i] - t_one[i]) / (pairs - 1) for i in (0, 1))
    # (file, line, function) -> (calls, primitive calls, self s, cumulative s, callers)
    raw = pstats.Stats(profile).stats  # get_stats_profile() keys by bare name: "masks" would collide
    total = max(v[3] for v in raw.values())
    stages = []
    for name, where in STAGES:
        cum = sum(v[3] for k, v in raw.items() if (Path(k[0]).name, k[2]) in where)
        stages.append((name, cum / pairs))
    stages.append(("everything else", total / pairs - sum(t for _, t in stages)))
    by_self = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        "pairs": pairs,
        "t_one": t_one,
        "t_many": t_many,
        "marginal": marginal,
        "bare": bare,
        "profile_total": total,
        "stages": stages,
        "top": [(f"{Path(k[0]).name}:{k[1]}({k[2]})", v[2], v[3]) for k, v in by_self],
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="WORK of a `make dataset` run (demo truth)")
    ap.add_argument("--datasets", type=Path, help="DATASETS of the same run (demo left views + disparity)")
    ap.add_argument("--repeats", type=int, default=5, help="calls per timing (the least counts)")
    ap.add_argument("--pairs", type=int, default=8, help="Motorcycle copies for the marginal label time")
    ap.add_argument(
        "--label-repeats", type=int, default=3, help="runs of each label timing (the least counts)"
    )
    ap.add_argument("--top", type=int, default=10, help="functions listed by self time")
    ap.add_argument("--skip-label", action="store_true", help="masks only, no whole-label run")
    ap.add_argument(
        "--schedulers",
        nargs="*",
        default=["default"],
        help="also time the label as a user runs it, per scheduler (default, threads, processes): "
        "one full shard plus --cluster-pairs pairs against one full shard",
    )
    ap.add_argument(
        "--cluster-pairs", type=int, default=64, help="pairs added to a full shard (scheduler timings)"
    )
    args = ap.parse_args()

    import labeler

    print(f"labeler from {Path(labeler.__file__).parent}")
    rows = [motorcycle_case(args.repeats)]
    if args.work and args.datasets:
        rows += demo_cases(args.work, args.datasets, args.repeats)
    print("\nclassical masks per image")
    for r in rows:
        line = f"  {r['case']:<28} {r['ms']:7.1f} ms (CPU {r['cpu_ms']:6.1f})  {r['proposals']:3d} proposals"
        if "ious" in r:
            ious = " ".join(f"{v:.2f}" for v in r["ious"])
            errs = " ".join(f"{100 * v:.1f}" for v in r["depth_errors"])
            line += f"  IoU {ious}  depth error % {errs}"
        else:
            line += f"  cover {r['covered']:.2f}  depth purity {r['purity']:.3f}"
        print(line)
    demo = [r for r in rows if "ious" in r]
    if demo:
        ious = [v for r in demo for v in r["ious"]]
        errs = [v for r in demo for v in r["depth_errors"]]
        ms, cpu_ms = np.mean([r["ms"] for r in demo]), np.mean([r["cpu_ms"] for r in demo])
        print(
            f"  demo: {len(ious)} objects, IoU mean {np.mean(ious):.3f} min {np.min(ious):.2f}; depth error "
            f"mean {100 * np.mean(errs):.2f} % max {100 * np.max(errs):.2f} %; "
            f"{ms:.1f} ms (CPU {cpu_ms:.1f}) per scene"
        )
    if args.skip_label:
        return
    w = whole_label(args.pairs, args.label_repeats, args.top)
    (one, one_cpu), (many, many_cpu) = w["t_one"], w["t_many"]
    (marginal, marginal_cpu), (bare, bare_cpu) = w["marginal"], w["bare"]
    print(
        f"\nwhole label of the Motorcycle pair, wall (CPU): {one:.2f} s ({one_cpu:.2f}) for 1 pair, "
        f"{many:.2f} s ({many_cpu:.2f}) for {w['pairs']}; marginal {1e3 * marginal:.0f} ms "
        f"({1e3 * marginal_cpu:.0f}) per pair; bare SGBM_3WAY {1e3 * bare:.1f} ms ({1e3 * bare_cpu:.1f}); "
        f"ratio {marginal / bare:.1f}x ({marginal_cpu / bare_cpu:.1f}x)"
    )
    for name in args.schedulers:
        m, m_cpu, b, ratio = default_run(
            args.cluster_pairs, args.label_repeats, None if name == "default" else name
        )
        print(
            f"as a user runs it (--scheduler {name}): marginal {1e3 * m:.0f} ms ({1e3 * m_cpu:.0f} CPU) per "
            f"pair against a bare SGBM_3WAY {1e3 * b:.1f} ms: ratio {ratio:.1f}x"
        )
    print(f"\ncProfile of the {w['pairs']}-pair label ({w['profile_total']:.2f} s), per pair by stage:")
    for name, seconds in w["stages"]:
        print(f"  {name:<34} {1e3 * seconds:7.1f} ms")
    print(f"top {args.top} by self time (self s, cumulative s, over {w['pairs']} pairs):")
    for name, own, cum in w["top"]:
        print(f"  {own:6.3f} {cum:6.3f}  {name}")


if __name__ == "__main__":
    main()
