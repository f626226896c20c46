"""Objects that are objects: precision and recall of the default CPU labels (sgbm + classical masks).

An object is right when its mask has IoU >= 0.5 with a true object and its median depth is within 10 %
of that object's (`labeler.segment.metrics`); every object reported counts, so a wall, a floor or a
border strip reported as an object lowers the precision.

1. Rendered rooms of five kinds (`labeler.synthetic.room_pair`: boards before a wall; textured floor and
   wall; objects touching; objects in front of each other; slanted planes and a two-tone board), 640x480
   through an ideal demo-like rig, labelled as `labeler pseudo-label --stereo sgbm --masks classical`
   labels a pair (sgbm disparity, classical masks, instance map, object policy, object table).
   Two sets of seeds: `tune` (0-3, the rules were developed on these) and `held-out` (1000-1003, never
   looked at while developing); both reported.
2. The demo and demo-video datasets of a `make dataset` run (--work, --datasets): the stored objects
   against the rendered truth (scenes; every labelled frame of the moving sequence), rectified as the
   dataset is.

    make dataset WORK=/tmp/wc DATASETS=/tmp/dc
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_objects.py --work /tmp/wc --datasets /tmp/dc

--previews DIR writes, per rendered room, the left view beside the reported objects (outlined,
green: right, red: wrong) to look at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SETS = {"tune": range(0, 4), "held-out": range(1000, 1004)}


def label_room(kind: str, seed: int, cache: Path | None):
    """(pair, ids, objects, masks seconds) of one rendered room labelled by sgbm + classical."""
    from labeler.segment.classical import ClassicalMaskBackend
    from labeler.segment.metrics import reported_objects
    from labeler.stereo.sgbm import SgbmBackend
    from labeler.synthetic import RectifiedPair, room_pair

    path = cache / f"{kind}_{seed}.npz" if cache else None
    if path and path.exists():
        pair = RectifiedPair(**dict(np.load(path)))
    else:
        pair = room_pair(kind, seed)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **pair.__dict__)
    disparity = SgbmBackend().disparity(pair.left, pair.right).disparity_px
    w = pair.left.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(disparity > 0, 0.78 * w * 0.06 / disparity, np.nan).astype(np.float32)
    t = time.perf_counter()
    masks = ClassicalMaskBackend().masks(pair.left, disparity_px=disparity)
    seconds = time.perf_counter() - t
    ids, objects = reported_objects(masks, depth)
    return pair, ids, objects, seconds


def preview(path: Path, pair, ids: np.ndarray, objects, right: set[int]) -> None:
    import cv2

    view = pair.left.copy()
    for o in objects:
        m = (ids == o.id).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        colour = (0, 255, 0) if o.id in right else (255, 0, 0)
        cv2.drawContours(view, contours, -1, colour, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack([pair.left, view]), cv2.COLOR_RGB2BGR))


def right_ids(ids, objects, truth_ids, truth_depth) -> set[int]:
    from labeler.segment.metrics import object_scores

    out = set()
    for o in objects:
        keep = ids == o.id
        if object_scores(np.where(keep, ids, 0), [o], truth_ids, truth_depth).right:
            out.add(o.id)
    return out


def rooms(sets: list[str], cache: Path | None, previews: Path | None) -> None:
    from labeler.segment.metrics import ObjectScores, object_scores
    from labeler.synthetic import ROOM_KINDS

    for set_name in sets:
        seeds = SETS[set_name]
        total = ObjectScores()
        per_kind = []
        ms = []
        for kind in ROOM_KINDS:
            kind_total = ObjectScores()
            for seed in seeds:
                pair, ids, objects, seconds = label_room(kind, seed, cache)
                ms.append(1e3 * seconds)
                s = object_scores(ids, objects, pair.instance_ids, pair.depth_m)
                kind_total += s
                if previews:
                    good = right_ids(ids, objects, pair.instance_ids, pair.depth_m)
                    preview(previews / set_name / f"{kind}_{seed}.png", pair, ids, objects, good)
            per_kind.append((kind, kind_total))
            total += kind_total
        print(
            f"\nrooms, {set_name} (seeds {seeds.start}-{seeds.stop - 1}, {len(ms)} scenes): precision "
            f"{total.precision:.3f} ({total.right} of {total.reported} reported), recall {total.recall:.3f} "
            f"({total.found} of {total.true}); classical masks {np.mean(ms):.1f} ms per scene"
        )
        for kind, s in per_kind:
            print(
                f"  {kind:<11} precision {s.precision:.3f} ({s.right}/{s.reported})  "
                f"recall {s.recall:.3f} ({s.found}/{s.true})"
            )


def demo(work: Path, datasets: Path) -> None:
    import cv2

    from labeler import open_dataset
    from labeler.rig.rectify import RectifyMaps
    from labeler.segment.metrics import ObjectScores, object_scores

    ds = open_dataset(datasets / "demo")
    maps = RectifyMaps.from_calibration(ds.manifest.calibration)
    total = ObjectScores()
    for i in range(len(ds)):
        s = ds[i]
        truth = np.load(work / "demo" / "truth" / f"{s.sample_id}.npz")
        ids = cv2.remap(truth["instance_ids"].astype(np.float32), *maps.left, cv2.INTER_NEAREST).astype(int)
        depth = cv2.remap(truth["depth_m"].astype(np.float32), *maps.left, cv2.INTER_NEAREST)
        one = object_scores(s.instance_ids, list(s.objects), ids, depth)
        print(f"  {s.sample_id}: {one.reported} reported, {one.right} right, {one.found} of {one.true} found")
        total += one
    print(
        f"demo dataset ({len(ds)} scenes): precision {total.precision:.3f} ({total.right} of "
        f"{total.reported} reported), recall {total.recall:.3f} ({total.found} of {total.true})"
    )


def demo_video(work: Path, datasets: Path, previews: Path | None) -> None:
    """The labelled frames of the demo-video dataset (`make dataset`: the sequence with --track) against
    the sequence's rendered truth (work/demo/truth/sequence/frame_*.npz), rectified as the dataset is."""
    import cv2

    from labeler import open_dataset
    from labeler.rig.rectify import RectifyMaps
    from labeler.segment.metrics import ObjectScores, object_scores

    ds = open_dataset(datasets / "demo-video")
    maps = RectifyMaps.from_calibration(ds.manifest.calibration)
    total = ObjectScores()
    wrong_frames = []
    for i in range(len(ds)):
        s = ds[i]
        rec, _ = ds.record(i)
        truth = np.load(work / "demo" / "truth" / "sequence" / f"frame_{rec.frame_index:06d}.npz")
        ids = cv2.remap(truth["instance_ids"].astype(np.float32), *maps.left, cv2.INTER_NEAREST).astype(int)
        depth = cv2.remap(truth["depth_m"].astype(np.float32), *maps.left, cv2.INTER_NEAREST)
        one = object_scores(s.instance_ids, list(s.objects), ids, depth)
        total += one
        if one.right < one.reported:
            wrong_frames.append(rec.frame_index)
        if previews:
            from types import SimpleNamespace

            good = right_ids(s.instance_ids, list(s.objects), ids, depth)
            pair = SimpleNamespace(left=s.left)
            preview(
                previews / "demo-video" / f"frame_{rec.frame_index:03d}.png",
                pair,
                s.instance_ids,
                s.objects,
                good,
            )
    print(
        f"demo-video dataset ({len(ds)} labelled frames): precision {total.precision:.3f} ({total.right} of "
        f"{total.reported} reported), recall {total.recall:.3f} ({total.found} of {total.true}); frames with "
        f"a wrong object: {wrong_frames or 'none'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="WORK of a `make dataset` run (demo truth)")
    ap.add_argument("--datasets", type=Path, help="DATASETS of the same run (the demo dataset)")
    ap.add_argument("--cache", type=Path, help="keep rendered rooms here (npz) and reuse them")
    ap.add_argument("--previews", type=Path, help="write one PNG per rendered room here")
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="rendered sets to run")
    ap.add_argument("--skip-rooms", action="store_true", help="the demo dataset only")
    args = ap.parse_args()

    import labeler

    print(f"labeler from {Path(labeler.__file__).parent}")
    if args.work and args.datasets:
        demo(args.work, args.datasets)
        if (args.datasets / "demo-video" / "manifest.json").exists():
            demo_video(args.work, args.datasets, args.previews)
    if not args.skip_rooms:
        rooms(args.sets, args.cache, args.previews)


if __name__ == "__main__":
    main()
