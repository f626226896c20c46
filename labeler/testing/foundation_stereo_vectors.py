"""What the FoundationStereo parity vectors hold: for the script that writes them and the tests reading them.

benchmarks/make_foundation_stereo_vectors.py runs NVIDIA's official code on a release from
`labeler.testing.foundation_stereo_release` and records, per ViT size, the output disparity and the
intermediate outputs of the submodules in `HOOKED` (named `feature.0.0`, `cnet.2.1`,
`update_block.iter3.delta_disp`, ... as `capture_intermediates` names them), so that a mismatch can be
located. To keep the vectors small, each intermediate is stored as `sample(...)` of it: the whole batch and
spatial extent, but only `SPREAD` channels (or, for the cost-volume classifier's single channel, `SPREAD`
disparity planes) evenly spread from the first to the last, so every part of a concatenation is seen.
The disparity is stored whole.

The input pair is kept as PNGs (`PAIR_NAMES`, in tests/models/data beside the vectors): `read_pair` reads
it, `case_pair` makes the demo cases' inputs from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

HOOKED = ("feature", "stem_2", "classifier", "cnet")  # plus update_block's delta_disp, per iteration
SPREAD = 6
PAIR_SIZE = (160, 224)  # (height, width)
PAIR_NAMES = ("foundation_stereo_left_160x224.png", "foundation_stereo_right_160x224.png")


def read_pair(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W, 3) uint8 RGB pair from its PNGs in `folder`."""
    import cv2

    views = []
    for name in PAIR_NAMES:
        bgr = cv2.imread(str(Path(folder) / name))
        if bgr is None:
            raise FileNotFoundError(Path(folder) / name)
        views.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return views[0], views[1]


def case_pair(case: Mapping[str, Any], folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB left and right of a demo case, before the demo's resize: the pair, with
    `mirror_tile` widened to twice its width by its mirror image (the same for both views), then cropped
    to `crop` = [y0, y1, x0, x1]."""
    y0, y1, x0, x1 = case["crop"]
    views = []
    for image in read_pair(folder):
        if case["mirror_tile"]:
            image = np.concatenate([image, image[:, ::-1]], axis=1)
        views.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return views[0], views[1]


def spread_indices(n: int, k: int = SPREAD) -> np.ndarray:
    """min(n, k) indices from 0 to n - 1, evenly spread (both ends included)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


def sample(array: np.ndarray) -> np.ndarray:
    """The stored part of an intermediate output (see the module docstring); arrays under 4-D whole."""
    a = np.asarray(array)
    if a.ndim < 4:
        return a
    axis = 1 if a.shape[1] > 1 else 2
    return np.ascontiguousarray(np.take(a, spread_indices(a.shape[axis]), axis=axis))


@contextmanager
def capture_intermediates(model: Any) -> Iterator[dict[str, np.ndarray]]:
    """Record the outputs of `HOOKED` submodules and each GRU iteration's `delta_disp` (float32 numpy)
    while the block runs. Works on labeler's model and on the official one (the same submodule names)."""
    import torch

    captured: dict[str, np.ndarray] = {}

    def store(prefix: str, out: object) -> None:
        if isinstance(out, (list, tuple)):
            for i, item in enumerate(out):
                store(f"{prefix}.{i}", item)
        elif isinstance(out, torch.Tensor):
            captured[prefix] = out.detach().float().cpu().numpy()

    handles = [
        getattr(model, name).register_forward_hook(lambda _m, _i, out, name=name: store(name, out))
        for name in HOOKED
    ]
    steps = count()
    handles.append(
        model.update_block.register_forward_hook(
            lambda _m, _i, out: store(f"update_block.iter{next(steps)}.delta_disp", out[2])
        )
    )
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
