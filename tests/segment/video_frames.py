"""Frames of a short moving scene for the video tests (SAM2's and SAM 3's), and the JPEG round trip that
lets labeler's in-memory sessions and the official folder loaders see the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labeler.testing.scenes import disc

H, W = 96, 128


def moving_frames(n: int, *, seed: int = 0) -> list[np.ndarray]:
    """n (H, W, 3) uint8 frames: a textured background and two discs that move across it (the second
    enters half-way)."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((H, W, 3)) * 80 + 40).astype(np.uint8)
    frames = []
    for t in range(n):
        img = bg.copy()
        img[disc(H, W, 30 + 2 * t, 40, 14)] = (220, 40, 40)
        if t >= n // 2:
            img[disc(H, W, 110 - 2 * (t - n // 2), 60, 10)] = (40, 200, 60)
        frames.append(img)
    return frames


def jpeg_round_trip(frames: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """Write the frames as the official loaders read them (<index>.jpg) and decode them back, so both
    sides see the same pixels."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{k}.jpg", quality=95)
        out.append(np.asarray(Image.open(folder / f"{k}.jpg").convert("RGB")))
    return out
