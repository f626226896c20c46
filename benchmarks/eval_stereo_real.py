"""sgbm on real pairs with ground truth: Middlebury Motorcycle (shipped by scikit-image) and any others.

Per pair: bad-2 (invalid predictions count as bad, as `labeler.stereo.metrics` counts them), EPE,
density, bad-2 over the predicted pixels only, and the backend's wall time (least of --repeats).

Pairs the project does not ship are read from --real DIR: one folder per pair holding left.png,
right.png and gt.png or gt.pgm (Middlebury 2001/2003 layout: 8-bit disparity x scale, 0 = unknown).
The scales of the classic pairs are known by folder name (cones, teddy: 4; venus: 8; tsukuba: 16);
any other folder needs a `scale.txt`. One way to get those four offline-once (a public course
repository holding Middlebury's quarter-size 2001/2003 pairs):

    git clone https://github.com/r09921135/acv /tmp/acv && d=/tmp/acv/hw4/testdata
    for s in cones teddy venus; do mkdir -p /tmp/real/$s; cp $d/$s/im2.png /tmp/real/$s/left.png
      cp $d/$s/im6.png /tmp/real/$s/right.png; for g in $d/$s/disp2.*; do cp $g /tmp/real/$s/gt.${g##*.}; done
    done  # tsukuba: im3.png -> left.png, im4.png -> right.png, disp3.pgm -> gt.pgm

    PYTHONPATH=$PWD .venv/bin/python benchmarks/eval_stereo_real.py --real /tmp/real

Nothing here is tuned per pair: every pair runs the backend's default config.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

KNOWN_SCALES = {"cones": 4.0, "teddy": 4.0, "venus": 8.0, "tsukuba": 16.0}


def load_pair(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left RGB, right RGB, gt disparity px with +inf unknown) of one --real folder."""
    import cv2

    left = cv2.cvtColor(cv2.imread(str(folder / "left.png")), cv2.COLOR_BGR2RGB)
    right = cv2.cvtColor(cv2.imread(str(folder / "right.png")), cv2.COLOR_BGR2RGB)
    gt_file = next(p for p in (folder / "gt.png", folder / "gt.pgm") if p.exists())
    raw = cv2.imread(str(gt_file), cv2.IMREAD_UNCHANGED).astype(np.float32)
    scale_file = folder / "scale.txt"
    scale = float(scale_file.read_text()) if scale_file.exists() else KNOWN_SCALES[folder.name]
    gt = np.where(raw > 0, raw / scale, np.inf).astype(np.float32)
    return left, right, gt


def evaluate(name: str, left: np.ndarray, right: np.ndarray, gt: np.ndarray, repeats: int) -> dict:
    from labeler.stereo.metrics import stereo_errors
    from labeler.stereo.sgbm import SgbmBackend

    backend = SgbmBackend()
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = backend.disparity(left, right)
        times.append(time.perf_counter() - t)
    assert out is not None
    d = out.disparity_px
    e = stereo_errors(d, gt)
    both = np.isfinite(gt) & np.isfinite(d)
    bad_valid = float(np.mean(np.abs(d[both] - gt[both]) > 2.0)) if both.any() else float("nan")
    return {
        "pair": f"{name} {left.shape[1]}x{left.shape[0]}",
        "bad2": e.bad_px_percent,
        "epe": e.epe_px,
        "density": e.density_percent,
        "bad2_valid": 100 * bad_valid,
        "ms": 1e3 * min(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, help="folder of extra real pairs (see the module docstring)")
    ap.add_argument("--repeats", type=int, default=3, help="backend calls per pair (the least time counts)")
    args = ap.parse_args()

    from skimage.data import stereo_motorcycle

    import labeler

    print(f"labeler from {Path(labeler.__file__).parent}")
    rows = [evaluate("motorcycle", *stereo_motorcycle(), args.repeats)]
    if args.real:
        for folder in sorted(p for p in args.real.iterdir() if p.is_dir()):
            rows.append(evaluate(folder.name, *load_pair(folder), args.repeats))
    print(f"{'pair':<22} {'bad-2 %':>8} {'EPE px':>7} {'density %':>9} {'bad-2 of valid %':>16} {'ms':>7}")
    for r in rows:
        print(
            f"{r['pair']:<22} {r['bad2']:8.2f} {r['epe']:7.3f} {r['density']:9.1f} "
            f"{r['bad2_valid']:16.2f} {r['ms']:7.1f}"
        )


if __name__ == "__main__":
    main()
