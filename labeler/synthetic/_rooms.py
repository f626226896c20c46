"""Rooms of several kinds for measuring instance proposals: boards before walls and floors, with truth.

Each kind stresses one thing a mask backend must get right; every object is a textured planar patch
(instance ids 1..k), the wall and the floor are background (id 0):

- `boards`: three textured boards in front of a noise-textured wall, no floor;
- `floor_wall`: strongly textured wall and floor, one board standing on the floor;
- `touching`: two boards side by side that touch in the image (the right one 10-25 % farther), one
  standing on the floor;
- `occluding`: three boards in a stack, each partly hiding the next (12-30 % apart in depth), two of them
  of one colour;
- `slanted`: a wall turned 30-45 degrees (depth varies across it), a board turned 35-50 degrees, and a
  board with a two-tone texture (large patches of two colours: one object, not two).

`room_pair` renders one through an ideal rectified rig shaped like the demo rig (focal 0.78 x width,
6 cm baseline), so its disparity, depth and ids are exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labeler.synthetic._rig import SyntheticRig, rotation
from labeler.synthetic._scene import RectifiedPair, Scene, TexturedRect, _to_uint8
from labeler.synthetic._textures import noise_texture

FLOOR_Y_M = 0.6  # the floor is this far below the camera (y points down)


def _colour(rng: np.random.Generator, lo: int = 40, hi: int = 220) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def _wall(
    rng: np.random.Generator, z: float, *, yaw: float = 0.0, contrast: float = 50.0, bottom: float = FLOOR_Y_M
) -> TexturedRect:
    r = rotation(0.0, yaw, 0.0)
    return TexturedRect(
        np.array([0.0, 0.0, z]),
        r[:, 0],
        r[:, 1],
        (-8.0, 8.0, -5.0, bottom),
        noise_texture(rng, 512, _colour(rng, 110, 200), contrast),
    )


def _floor(rng: np.random.Generator, far_z: float, *, contrast: float = 40.0) -> TexturedRect:
    return TexturedRect(
        np.array([0.0, FLOOR_Y_M, 0.0]),
        np.array([1.0, 0.0, 0.0]),
        np.array([0.0, 0.0, 1.0]),
        (-8.0, 8.0, 0.2, far_z),
        noise_texture(rng, 512, _colour(rng, 70, 150), contrast),
    )


def _board(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    size: tuple[float, float],
    *,
    instance_id: int,
    yaw: float = 0.0,
    colour: tuple[int, int, int] | None = None,
    texture: np.ndarray | None = None,
) -> TexturedRect:
    """A board of `size` (w, h) m centred at `centre`, turned by `yaw` about the vertical."""
    r = rotation(0.0, yaw, 0.0)
    w, h = size
    if texture is None:
        texture = noise_texture(rng, 256, colour or _colour(rng), float(rng.uniform(40, 65)))
    return TexturedRect(
        np.asarray(centre, float),
        r[:, 0],
        r[:, 1],
        (-w / 2, w / 2, -h / 2, h / 2),
        texture,
        instance_id=instance_id,
    )


def two_tone_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: large patches of two distinct colours, each with fine noise on it."""
    import cv2

    a, b = np.asarray(_colour(rng, 30, 120), np.float32), np.asarray(_colour(rng, 140, 240), np.float32)
    field = cv2.resize(
        rng.standard_normal((5, 5)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    pick = (field > 0)[..., None]
    grain = noise_texture(rng, size, (128, 128, 128), 25).astype(np.float32) - 128
    return np.clip(np.where(pick, a, b) + grain, 0, 255).astype(np.uint8)


def _spread(rng: np.random.Generator, z: float, i: int, n: int) -> tuple[float, float]:
    """(x, y) of board i of n across the view at depth z (the demo's layout)."""
    x = (-0.35 + 0.7 * i / max(1, n - 1)) * z * 0.75 + rng.uniform(-0.05, 0.05)
    return x, float(rng.uniform(-0.15, 0.1) * z)


def _size(rng: np.random.Generator, z: float) -> tuple[float, float]:
    return float(rng.uniform(0.22, 0.4) * z / 1.5 + 0.1), float(rng.uniform(0.2, 0.35) * z / 1.5 + 0.1)


def _boards(rng: np.random.Generator) -> list[TexturedRect]:
    rects = [_wall(rng, float(rng.uniform(3.0, 4.0)), contrast=float(rng.uniform(50, 70)), bottom=5.0)]
    for i, z in enumerate(np.sort(rng.uniform(1.0, 2.6, 3))):
        x, y = _spread(rng, z, i, 3)
        rects.append(
            _board(rng, (x, y, z), _size(rng, z), instance_id=i + 1, yaw=float(rng.uniform(-0.3, 0.3)))
        )
    return rects


def _standing(rng: np.random.Generator, x: float, z: float, instance_id: int) -> TexturedRect:
    """A board whose lower edge rests on the floor."""
    w, h = _size(rng, z)
    return _board(
        rng, (x, FLOOR_Y_M - h / 2, z), (w, h), instance_id=instance_id, yaw=float(rng.uniform(-0.2, 0.2))
    )


def _floor_wall(rng: np.random.Generator) -> list[TexturedRect]:
    wall_z = float(rng.uniform(3.2, 4.0))
    rects = [
        _wall(rng, wall_z, contrast=float(rng.uniform(60, 80))),
        _floor(rng, wall_z, contrast=float(rng.uniform(55, 75))),
    ]
    zs = np.sort(rng.uniform(1.2, 2.6, 3))
    for i, z in enumerate(zs[:2]):
        x, y = _spread(rng, z, 2 * i, 3)
        rects.append(
            _board(rng, (x, y, z), _size(rng, z), instance_id=i + 1, yaw=float(rng.uniform(-0.3, 0.3)))
        )
    rects.append(_standing(rng, float(rng.uniform(-0.1, 0.1)) * zs[2], float(zs[2]), 3))
    return rects


def _touching(rng: np.random.Generator) -> list[TexturedRect]:
    wall_z = float(rng.uniform(3.2, 4.0))
    rects = [_wall(rng, wall_z), _floor(rng, wall_z)]
    z1 = float(rng.uniform(1.2, 1.8))
    z2 = z1 * float(rng.uniform(1.1, 1.25))
    w1, h1 = _size(rng, z1)
    w2, h2 = _size(rng, z2)
    x1, y1 = -0.15 * z1, float(rng.uniform(-0.1, 0.05)) * z1
    # board 2's left edge sits where board 1's right edge is seen, a little behind it: they touch
    x2 = (x1 + w1 / 2 - 0.02) * z2 / z1 + w2 / 2
    rects.append(_board(rng, (x1, y1, z1), (w1, h1), instance_id=1))
    rects.append(_board(rng, (x2, y1 * z2 / z1, z2), (w2, h2), instance_id=2))
    z3 = float(rng.uniform(2.0, 2.6))
    rects.append(_standing(rng, -0.45 * z3, z3, 3))
    return rects


def _occluding(rng: np.random.Generator) -> list[TexturedRect]:
    wall_z = float(rng.uniform(3.2, 4.0))
    rects = [_wall(rng, wall_z), _floor(rng, wall_z)]
    z = float(rng.uniform(1.0, 1.4))
    shared = _colour(rng)
    x = float(rng.uniform(-0.25, -0.1))
    for i in range(3):
        w, h = _size(rng, z)
        colour = shared if i < 2 else None
        rects.append(
            _board(
                rng, (x * z, float(rng.uniform(-0.12, 0.0)) * z, z), (w, h), instance_id=i + 1, colour=colour
            )
        )
        x += float(rng.uniform(0.12, 0.2))  # the next one sits to the right and behind: partly hidden
        z *= float(rng.uniform(1.12, 1.3))
    return rects


def _slanted(rng: np.random.Generator) -> list[TexturedRect]:
    wall_z = float(rng.uniform(3.0, 3.6))
    yaw = float(rng.choice([-1, 1]) * rng.uniform(0.5, 0.8))
    rects = [_wall(rng, wall_z, yaw=yaw), _floor(rng, wall_z + 3.0)]
    z1, z2, z3 = np.sort(rng.uniform(1.1, 2.2, 3))
    rects.append(
        _board(
            rng,
            (-0.3 * z1, -0.05 * z1, z1),
            _size(rng, z1),
            instance_id=1,
            yaw=float(rng.choice([-1, 1]) * rng.uniform(0.6, 0.9)),
        )
    )
    rects.append(
        _board(rng, (0.0, -0.1 * z2, z2), _size(rng, z2), instance_id=2, texture=two_tone_texture(rng))
    )
    rects.append(
        _board(rng, (0.3 * z3, 0.0, z3), _size(rng, z3), instance_id=3, yaw=float(rng.uniform(-0.2, 0.2)))
    )
    return rects


ROOM_KINDS: dict[str, Callable[[np.random.Generator], list[TexturedRect]]] = {
    "boards": _boards,
    "floor_wall": _floor_wall,
    "touching": _touching,
    "occluding": _occluding,
    "slanted": _slanted,
}


def room_scene(kind: str, rng: np.random.Generator) -> Scene:
    """A room of `kind` (a key of ROOM_KINDS) drawn from `rng`."""
    if kind not in ROOM_KINDS:
        raise ValueError(f"room kind must be one of {sorted(ROOM_KINDS)}, got {kind!r}")
    return Scene(ROOM_KINDS[kind](rng))


def room_pair(
    kind: str, seed: int, *, width: int = 640, height: int = 480, supersample: int = 2, noise_dn: float = 1.0
) -> RectifiedPair:
    """Render a room of `kind` from `seed` through an ideal rectified demo-like rig.

    Returns the left / right views (with `noise_dn` Gaussian noise, like the demo captures) and the
    left view's exact disparity, depth and instance ids.
    """
    rng = np.random.default_rng(seed)
    scene = room_scene(kind, rng)
    rig = SyntheticRig.rectified(width, height, focal_px=0.78 * width, baseline_m=0.06)
    left_f, depth_m, ids = scene._trace(rig.left, supersample)
    right_f, _, _ = scene._trace(rig.right, supersample)
    left, right = _to_uint8(left_f, noise_dn, rng), _to_uint8(right_f, noise_dn, rng)
    with np.errstate(divide="ignore"):
        disparity = rig.left.K[0, 0] * rig.baseline_m / depth_m
    return RectifiedPair(
        left=left,
        right=right,
        disparity_px=disparity.astype(np.float32),
        depth_m=depth_m.astype(np.float32),
        instance_ids=ids,
    )
