"""Accuracy of the `make dataset` outputs against their truth (run `make dataset` first).

- Middlebury Motorcycle (real): EPE, bad-2 (invalid predictions count as bad), density, and the stored
  metric depth against depth from the ground-truth disparity.
- Demo rig scenes (rendered): each object's median depth (best-IoU labelled object) against the truth, and
  objects per scene against the rendered truth: precision and recall of objects at mask IoU >= 0.5.

    .venv/bin/python benchmarks/eval_accuracy.py [--work work] [--datasets datasets]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import cv2

    from labeler import open_dataset
    from labeler.depth import disparity_to_depth
    from labeler.rig.rectify import RectifyMaps
    from labeler.stereo.metrics import stereo_errors
    from labeler.synthetic.demo import load_demo_truth

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("work"))
    ap.add_argument("--datasets", type=Path, default=Path("datasets"))
    args = ap.parse_args()

    mb = open_dataset(args.datasets / "middlebury")
    gt = np.load(args.work / "demo" / "truth" / "motorcycle_disparity_px.npy")
    s = mb[0]
    e = stereo_errors(s.disparity_px, gt)
    g = disparity_to_depth(gt, mb.manifest.depth)
    both = np.isfinite(g) & np.isfinite(s.depth_m)
    rel = np.abs(s.depth_m[both] - g[both]) / g[both]
    print(
        f"Middlebury Motorcycle ({mb.manifest.stereo.name}): EPE {e.epe_px:.3f} px, "
        f"bad-2 {e.bad_px_percent:.2f} %, "
        f"density {e.density_percent:.1f} %; depth AbsRel mean {rel.mean():.4f}, median {np.median(rel):.4f}"
    )

    ds = open_dataset(args.datasets / "demo")
    maps = RectifyMaps.from_calibration(ds.manifest.calibration)  # the manifest embeds the calibration
    truth = {t.pair_id: t for t in load_demo_truth(args.work / "demo").scenes}
    errors = []
    n_labelled = n_true = tp_labelled = tp_true = 0
    for i in range(len(ds)):
        s = ds[i]
        raw_ids = np.load(args.work / "demo" / "truth" / f"{s.sample_id}.npz")["instance_ids"]
        rect_ids = cv2.remap(raw_ids.astype(np.float32), *maps.left, cv2.INTER_NEAREST).astype(int)
        true_masks = [rect_ids == t.id for t in truth[s.sample_id].objects]
        ious = np.array(
            [
                [
                    np.logical_and(m, s.instance_ids == o.id).sum()
                    / np.logical_or(m, s.instance_ids == o.id).sum()
                    for m in true_masks
                ]
                for o in s.objects
            ]
        ).reshape(len(s.objects), len(true_masks))
        n_labelled, n_true = n_labelled + len(s.objects), n_true + len(true_masks)
        tp_labelled += int((ious.max(axis=1, initial=0) >= 0.5).sum())
        tp_true += int((ious.max(axis=0, initial=0) >= 0.5).sum())
        print(f"  {s.sample_id}: {len(s.objects)} objects labelled, {len(true_masks)} rendered")
        for obj in truth[s.sample_id].objects:
            mask = rect_ids == obj.id
            iou, best = max(
                (
                    (
                        np.logical_and(mask, s.instance_ids == o.id).sum()
                        / np.logical_or(mask, s.instance_ids == o.id).sum(),
                        o,
                    )
                    for o in s.objects
                ),
                key=lambda t: t[0],
            )
            err = best.depth_m_median / obj.depth_m_median - 1
            errors.append(abs(err))
            print(
                f"  {s.sample_id} object {obj.id}: truth {obj.depth_m_median:.3f} m, labelled "
                f"{best.depth_m_median:.3f} m ({err:+.2%}), mask IoU {iou:.2f}"
            )
    print(
        f"demo rig: {len(errors)} objects, depth error mean {np.mean(errors):.2%}, max {np.max(errors):.2%}"
    )
    print(
        f"demo rig objects at IoU >= 0.5: precision {tp_labelled / max(n_labelled, 1):.3f} "
        f"({tp_labelled} of {n_labelled} labelled), recall {tp_true / max(n_true, 1):.3f} "
        f"({tp_true} of {n_true} rendered)"
    )


if __name__ == "__main__":
    main()
