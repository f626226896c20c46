#!/usr/bin/env python
"""Write the FoundationStereo demo-parity vectors: what NVIDIA's official code computes, run as its demo.

    python benchmarks/make_foundation_stereo_vectors.py --foundation-stereo-src /tmp/FoundationStereo \
        --out tests/models/data/foundation_stereo_demo_vits.npz

The official checkout is imported from `--foundation-stereo-src` (nothing of it is copied here), with the
offline shims of `bench_foundation_stereo.py`. The weights are the shared generator's deterministic ViT-S
checkpoint (../shared/foundation_stereo/make_checkpoint.py), the images crops of the shared 160x224 pair
(`case_pair`, which the tests use too).
Each case of `CASES` runs the steps of the official `scripts/run_demo.py` on the CPU in float32 (its CUDA
autocast off, as for the shared vectors): `cv2.resize` by `scale` (the demo's call: bilinear), the
official `InputPadder(divis_by=32)`, `forward(test_mode=True)` or `run_hierachical(small_ratio=0.5)`, unpad;
then the demo's `remove_invisible` rule (invalid where x - disparity < 0) on the result.

Output: an npz with `<case>.disp` ((h, w) float32 px, at the scaled size as the demo returns it) and
`<case>.invisible` ((h, w) bool, the pixels the demo's remove_invisible sets to inf), and a JSON beside it
with the cases, the official commit, the command and the versions. The tests read the cases from it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "foundation_stereo"


class Case(TypedDict):
    """Inputs of one case (see `case_pair`) and the demo's --scale, --hiera and --valid_iters."""

    mirror_tile: bool
    crop: list[int]
    scale: float
    hiera: bool
    valid_iters: int


CASES: dict[str, Case] = {
    # 61x421, padded by 3 rows (1 top, 2 bottom) and 27 columns (13 left, 14 right) to 64x448; wide enough
    # that the random-like weights' ~210 px disparities leave about half the pixels visible in the right view
    "pad": {"mirror_tile": True, "crop": [50, 111, 13, 434], "scale": 1.0, "hiera": False, "valid_iters": 4},
    # 93x211, padded to 96x224 (1 top, 2 bottom, 6 left, 7 right); the coarse pass at 48x112 to 64x128
    "hiera": {"mirror_tile": False, "crop": [30, 123, 5, 216], "scale": 1.0, "hiera": True, "valid_iters": 4},
    # the whole pair at 0.6: cv2.resize gives 96x134, padded to 96x160; the demo returns 96x134
    "scale": {"mirror_tile": False, "crop": [0, 160, 0, 224], "scale": 0.6, "hiera": False, "valid_iters": 4},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--foundation-stereo-src", type=Path, required=True, help="official checkout")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write (the .json goes beside it)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p.parse_args(argv)


def case_pair(case: Case, shared: Path = SHARED) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB left and right of a case, before the demo's resize: the shared 160x224 pair,
    with `mirror_tile` widened to 160x448 by its mirror image (the same for both views), then cropped
    to `crop` = [y0, y1, x0, x1]."""
    import cv2

    y0, y1, x0, x1 = case["crop"]
    views = []
    for side in ("left", "right"):
        bgr = cv2.imread(str(shared / f"{side}_160x224.png"))
        if bgr is None:
            raise FileNotFoundError(shared / f"{side}_160x224.png")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if case["mirror_tile"]:
            image = np.concatenate([image, image[:, ::-1]], axis=1)
        views.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return views[0], views[1]


def run_demo_steps(model: Any, padder_cls: Any, case: Case) -> np.ndarray:
    """The official demo's disparity for one case, (h, w) float32 at the scaled size."""
    import cv2
    import torch

    left, right = case_pair(case)
    scale = case["scale"]
    left = cv2.resize(left, fx=scale, fy=scale, dsize=None)
    right = cv2.resize(right, fx=scale, fy=scale, dsize=None)
    h, w = left.shape[:2]
    a = torch.as_tensor(left).float()[None].permute(0, 3, 1, 2)
    b = torch.as_tensor(right).float()[None].permute(0, 3, 1, 2)
    padder = padder_cls(a.shape, divis_by=32, force_square=False)
    a, b = padder.pad(a, b)
    iters = case["valid_iters"]
    with torch.inference_mode():
        if case["hiera"]:
            disp = model.run_hierachical(a, b, iters=iters, test_mode=True, small_ratio=0.5)
        else:
            disp = model.forward(a, b, iters=iters, test_mode=True)
    return padder.unpad(disp.float()).cpu().numpy().reshape(h, w).astype(np.float32)


def demo_invisible(disp: np.ndarray) -> np.ndarray:
    """The demo's remove_invisible rule: the match x - d falls left of the right image."""
    return (np.arange(disp.shape[1])[None, :] - disp) < 0


def git_commit(src: Path) -> str:
    out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> None:
    import cv2
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_foundation_stereo import checkpoint_for, load_official, official_import_shims

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    src = args.foundation_stereo_src.resolve()
    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = checkpoint_for("vits", {}, Path(tmp))
        model = load_official(src, weights, "cpu")
        with official_import_shims(src):
            padder_cls = importlib.import_module("core.utils.utils").InputPadder
        for name, case in CASES.items():
            disp = run_demo_steps(model, padder_cls, case)
            arrays[f"{name}.disp"] = disp
            arrays[f"{name}.invisible"] = demo_invisible(disp)
            print(f"{name}: {disp.shape}, disparity {disp.min():.3g}..{disp.max():.3g} px", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    given = sys.argv[1:] if argv is None else argv
    meta = {
        "what": "official FoundationStereo demo steps (scripts/run_demo.py) on the CPU, float32",
        "official_repository": "https://github.com/NVlabs/FoundationStereo",
        "official_commit": git_commit(src),
        "command": "python benchmarks/make_foundation_stereo_vectors.py " + " ".join(given),
        "weights": "vits from ../shared/foundation_stereo/make_checkpoint.py (deterministic, random-like)",
        "pair": "../shared/foundation_stereo/{left,right}_160x224.png (RGB), per case: "
        "case_pair() of the script",
        "cases": CASES,
        "keys": "<case>.disp: (h, w) float32 px at the scaled size; <case>.invisible: (h, w) bool",
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
