#!/usr/bin/env python
"""Write the FoundationStereo parity vectors: what NVIDIA's official code computes, run as its demo.

    git clone https://github.com/NVlabs/FoundationStereo /tmp/FoundationStereo
    git -C /tmp/FoundationStereo checkout 6e8806816b533e4d13ddbb95ffa907b797060a62
    python benchmarks/make_foundation_stereo_vectors.py --foundation-stereo-src /tmp/FoundationStereo

The official checkout is imported from `--foundation-stereo-src` (nothing of it is copied here), with the
offline shims of `bench_foundation_stereo.py`; the weights are the project's deterministic releases
(`labeler.testing.foundation_stereo_release`, ViT-S and ViT-L, random-like), the input pair the project's
own rendered scene (`labeler.testing.scenes.object_scene`, written to PNGs here first so that the inputs
stay fixed). Everything runs on the CPU in float32 (the release's CUDA autocast off). It writes, into
`--out-dir` (default tests/models/data):

- `foundation_stereo_{left,right}_160x224.png`: the pair (RGB);
- `foundation_stereo_official_keys.json`: name, shape and dtype of every tensor of the official model's
  state dict, per ViT size (what a real release loads strictly into);
- `foundation_stereo_parity.npz`: per ViT size, `<vit>/disp` ((1, 1, 160, 224) px, the official
  `forward(iters=4, test_mode=True)` on the pair as float RGB in [0, 255]) and `<vit>/<submodule output>`,
  the intermediate outputs as `labeler.testing.foundation_stereo_vectors.sample` keeps them;
- `foundation_stereo_demo_vits.npz`: the steps of the official `scripts/run_demo.py` per case of `CASES`
  (ViT-S): `cv2.resize` by `scale` (the demo's call: bilinear), the official `InputPadder(divis_by=32)`,
  `forward(test_mode=True)` or `run_hierachical(small_ratio=0.5)`, unpad; `<case>.disp` ((h, w) float32
  px at the scaled size, as the demo returns it) and `<case>.invisible` ((h, w) bool, the pixels the demo's
  remove_invisible sets to inf: x - disparity < 0);
- `foundation_stereo_vectors.json`: the official commit, this command, the fill rule, the cases and the
  versions. The tests read the cases from it.
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

from labeler.testing.foundation_stereo_vectors import PAIR_NAMES, PAIR_SIZE, case_pair, read_pair

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "models" / "data"
PAIR_SEED = 24  # object_scene's seed
PARITY_ITERS = 4


class Case(TypedDict):
    """Inputs of one case (see `case_pair`) and the demo's --scale, --hiera and --valid_iters."""

    mirror_tile: bool
    crop: list[int]
    scale: float
    hiera: bool
    valid_iters: int


CASES: dict[str, Case] = {
    # 61x421, padded by 3 rows (1 top, 2 bottom) and 27 columns (13 left, 14 right) to 64x448; wide enough
    # that the random-like weights' 60-210 px disparities leave about half the pixels visible in the right
    # view
    "pad": {"mirror_tile": True, "crop": [50, 111, 13, 434], "scale": 1.0, "hiera": False, "valid_iters": 4},
    # 93x211, padded to 96x224 (1 top, 2 bottom, 6 left, 7 right); the coarse pass at 48x112 to 64x128
    "hiera": {"mirror_tile": False, "crop": [30, 123, 5, 216], "scale": 1.0, "hiera": True, "valid_iters": 4},
    # the whole pair at 0.6: cv2.resize gives 96x134, padded to 96x160; the demo returns 96x134
    "scale": {"mirror_tile": False, "crop": [0, 160, 0, 224], "scale": 0.6, "hiera": False, "valid_iters": 4},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--foundation-stereo-src", type=Path, required=True, help="official checkout")
    p.add_argument("--out-dir", type=Path, default=DATA, help="where the files go (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p.parse_args(argv)


def pair_paths(folder: Path = DATA) -> tuple[Path, Path]:
    return folder / PAIR_NAMES[0], folder / PAIR_NAMES[1]


def write_pair(folder: Path) -> None:
    """Render the pair (a lightly textured disc at 12 px in front of a textured plane at 4 px) to PNGs."""
    from labeler.io import write_png
    from labeler.testing.scenes import object_scene

    pair = object_scene(*PAIR_SIZE, seed=PAIR_SEED)
    for path, image in zip(pair_paths(folder), (pair.left, pair.right), strict=True):
        write_png(path, image)


def as_batch(image: np.ndarray) -> Any:
    """(1, 3, H, W) float32 in [0, 255], as the demo feeds the model."""
    import torch

    return torch.as_tensor(image).float()[None].permute(0, 3, 1, 2)


def run_demo_steps(model: Any, padder_cls: Any, case: Case, folder: Path) -> np.ndarray:
    """The official demo's disparity for one case, (h, w) float32 at the scaled size."""
    import cv2
    import torch

    left, right = case_pair(case, folder)
    scale = case["scale"]
    left = cv2.resize(left, fx=scale, fy=scale, dsize=None)
    right = cv2.resize(right, fx=scale, fy=scale, dsize=None)
    h, w = left.shape[:2]
    a, b = as_batch(left), as_batch(right)
    padder = padder_cls(a.shape, divis_by=32, force_square=False)
    a, b = padder.pad(a, b)
    iters = case["valid_iters"]
    with torch.inference_mode():
        if case["hiera"]:
            disp = model.run_hierachical(a, b, iters=iters, test_mode=True, small_ratio=0.5)
        else:
            disp = model.forward(a, b, iters=iters, test_mode=True)
    return padder.unpad(disp.float()).cpu().numpy().reshape(h, w).astype(np.float32)


def parity_vectors(model: Any, vit: str, folder: Path) -> dict[str, np.ndarray]:
    """`<vit>/disp` and the sampled `<vit>/<intermediate>` of the official forward pass on the pair."""
    import torch

    from labeler.testing.foundation_stereo_vectors import capture_intermediates, sample

    left, right = read_pair(folder)
    with torch.inference_mode(), capture_intermediates(model) as captured:
        disp = model.forward(as_batch(left), as_batch(right), iters=PARITY_ITERS, test_mode=True)
    out = {f"{vit}/{k}": sample(v) for k, v in captured.items()}
    out[f"{vit}/disp"] = disp.float().cpu().numpy()
    return out


def demo_invisible(disp: np.ndarray) -> np.ndarray:
    """The demo's remove_invisible rule: the match x - d falls left of the right image."""
    return (np.arange(disp.shape[1])[None, :] - disp) < 0


def official_layout(model: Any) -> list[list[Any]]:
    return [[k, list(t.shape), str(t.dtype)] for k, t in model.state_dict().items()]


def git_commit(src: Path) -> str:
    out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> None:
    import cv2
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_foundation_stereo import load_official, official_import_shims

    from labeler.testing.foundation_stereo_release import FILL_RULE, release_layout, write_release

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    src = args.foundation_stereo_src.resolve()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_pair(out)
    parity: dict[str, np.ndarray] = {}
    demo: dict[str, np.ndarray] = {}
    keys: dict[str, list[list[Any]]] = {}
    for vit in ("vits", "vitl"):
        with tempfile.TemporaryDirectory() as tmp:
            weights = write_release(vit, Path(tmp) / vit)
            model = load_official(src, weights, "cpu")  # strict: the release holds exactly its tensors
        keys[vit] = official_layout(model)
        ours = {k: (s, d) for k, s, d in release_layout(vit)}
        if ours != {k: (s, d) for k, s, d in keys[vit]}:
            sys.exit(f"{vit}: labeler's layout differs from the official state dict")
        parity.update(parity_vectors(model, vit, out))
        d = parity[f"{vit}/disp"]
        print(f"{vit} parity: disparity {d.min():.4g}..{d.max():.4g} px, {len(parity)} arrays", flush=True)
        if vit == "vits":
            with official_import_shims(src):
                padder_cls = importlib.import_module("core.utils.utils").InputPadder
            for name, case in CASES.items():
                disp = run_demo_steps(model, padder_cls, case, out)
                demo[f"{name}.disp"] = disp
                demo[f"{name}.invisible"] = demo_invisible(disp)
                print(
                    f"{name}: {disp.shape}, disparity {disp.min():.3g}..{disp.max():.3g} px, "
                    f"invisible {demo[f'{name}.invisible'].mean():.2f}",
                    flush=True,
                )
        del model
    np.savez_compressed(out / "foundation_stereo_parity.npz", **parity)
    np.savez_compressed(out / "foundation_stereo_demo_vits.npz", **demo)
    (out / "foundation_stereo_official_keys.json").write_text(
        "{\n"
        + ",\n".join(
            f'  "{vit}": [\n' + ",\n".join("    " + json.dumps(row) for row in rows) + "\n  ]"
            for vit, rows in keys.items()
        )
        + "\n}\n"
    )
    given = sys.argv[1:] if argv is None else argv
    meta = {
        "what": "official FoundationStereo on the CPU, float32, its demo's steps",
        "official_repository": "https://github.com/NVlabs/FoundationStereo",
        "official_commit": git_commit(src),
        "command": "python benchmarks/make_foundation_stereo_vectors.py " + " ".join(given),
        "weights": "labeler.testing.foundation_stereo_release.write_release(vit, ...) "
        "(deterministic, random-like: NOT a trained model)",
        "fill_rule": FILL_RULE,
        "pair": f"labeler.testing.scenes.object_scene({PAIR_SIZE[0]}, {PAIR_SIZE[1]}, seed={PAIR_SEED}) "
        "as RGB PNGs: " + ", ".join(p.name for p in pair_paths(out)),
        "parity": {
            "file": "foundation_stereo_parity.npz",
            "call": f"forward(left, right, iters={PARITY_ITERS}, test_mode=True), "
            "(1, 3, 160, 224) float RGB in [0, 255]",
            "keys": "<vit>/disp whole; <vit>/<submodule output> as "
            "labeler.testing.foundation_stereo_vectors.sample keeps it",
        },
        "demo": {
            "file": "foundation_stereo_demo_vits.npz",
            "keys": "<case>.disp: (h, w) float32 px at the scaled size; <case>.invisible: (h, w) bool",
        },
        "cases": CASES,
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
    }
    (out / "foundation_stereo_vectors.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote the vectors into {out}")


if __name__ == "__main__":
    main()
