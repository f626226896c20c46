"""The synthetic rectified pairs that the conformance suites and the tests use, with their truth.

Every scene is textured fronto-parallel surfaces in front of a rectified rig (`SyntheticRig.rectified`:
fx = 300 px, baseline 0.1 m, the identity calibration), ray-cast by `labeler.synthetic.render_pair`:
the left view shows each texture unresampled, the right view shows it shifted by its disparity
(bilinear, so fractional disparities are exact up to interpolation), and occlusions are those of the
geometry. The background is an endless plane (its texture continues mirrored past the image edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labeler.synthetic import (
    RectifiedPair,
    Scene,
    SyntheticRig,
    blurred_noise_texture,
    fronto_parallel,
    noise_texture,
    render_pair,
)


@dataclass(frozen=True)
class Layer:
    """A fronto-parallel surface: where it is in the left image, what it looks like, how far it is."""

    mask: np.ndarray  # (H, W) bool, in left-image coordinates
    image: np.ndarray  # (H, W, 3) uint8, in left-image coordinates
    disparity_px: float


def layered_pair(
    background: np.ndarray, background_disparity_px: float, layers: Sequence[Layer] = ()
) -> RectifiedPair:
    """A textured background plane and layers in front of it; layer k gets instance id k + 1.

    Args:
        background: (H, W, 3) uint8, the left view of the background plane (it sets the image size).
        background_disparity_px: > 0, the plane's disparity.
        layers: surfaces of the same size as `background`, each nearer than whatever it covers.
    """
    h, w = background.shape[:2]
    rig = SyntheticRig.rectified(w, h)
    rects = [fronto_parallel(rig, background, background_disparity_px, bounded=False)]
    rects += [
        fronto_parallel(rig, layer.image, layer.disparity_px, mask=layer.mask, instance_id=k + 1)
        for k, layer in enumerate(layers)
    ]
    return render_pair(rig, Scene(rects))


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(h, w) bool disc."""
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def plane_pair(h: int = 96, w: int = 128, *, disparity_px: float = 6.5, seed: int = 0) -> RectifiedPair:
    """One textured fronto-parallel plane at a known (fractional) disparity."""
    return layered_pair(blurred_noise_texture(h, w, seed=seed), disparity_px)


def square_scene(h: int = 96, w: int = 128, *, seed: int = 0) -> RectifiedPair:
    """A textured square at disparity 14 px in front of a textured plane at 5 px."""
    mask = np.zeros((h, w), bool)
    mask[h // 4 : 3 * h // 4, w // 3 : 3 * w // 4] = True
    square = Layer(mask, blurred_noise_texture(h, w, seed=seed + 1), 14.0)
    return layered_pair(blurred_noise_texture(h, w, seed=seed), 5.0, [square])


def object_scene(h: int = 96, w: int = 128, *, seed: int = 0) -> RectifiedPair:
    """A plain-coloured, lightly textured disc (instance 1) in front of a colourful textured background."""
    obj = blurred_noise_texture(h, w, seed=seed + 1, base=(40, 90, 220), amplitude=30.0)
    return layered_pair(
        blurred_noise_texture(h, w, seed=seed, blur_px=1.5),
        4.0,
        [Layer(disc(h, w, 0.55 * w, 0.5 * h, 0.28 * h), obj, 12.0)],
    )


def box_pair(
    rng: np.random.Generator, width: int, height: int, *, d_background: int = 6, d_object: int = 16
) -> RectifiedPair:
    """A box (instance 1) at `d_object` px in front of a background at `d_background` px, both with
    multi-scale texture (`noise_texture`, the demo's); the box has a random base colour.

    The pairs the pipeline tests and benchmarks write to disk. The box covers the middle third of the
    width and half of the height.
    """
    pad = d_object + 8
    # one square texture wide enough for the background to fill the right view (drawn first: the
    # colour and the box texture come after it from `rng`)
    bg = noise_texture(rng, max(width + 2 * pad, height), (140, 130, 120), 50)[:height]
    obj = noise_texture(rng, max(width, height), tuple(int(c) for c in rng.integers(40, 220, 3)), 60)
    x0, y0, w, h = width // 3, height // 4, width // 3, height // 2
    rig = SyntheticRig.rectified(width, height)
    background = fronto_parallel(rig, bg, d_background, top_left_px=(-pad, 0))
    box = fronto_parallel(rig, obj[:h, :w], d_object, top_left_px=(x0, y0), instance_id=1)
    return render_pair(rig, Scene([background, box]))
