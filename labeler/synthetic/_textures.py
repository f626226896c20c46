"""Random textures for synthetic surfaces: enough structure for stereo matching, known colours."""

from __future__ import annotations

import numpy as np


def noise_texture(
    rng: np.random.Generator, size: int, base_rgb: tuple[int, ...], contrast: float = 70.0
) -> np.ndarray:
    """A (size, size, 3) uint8 multi-scale noise texture around a base colour: blobs down to single
    pixels, enough structure for stereo matching (the demo's objects and the pipeline tests' pairs)."""
    import cv2

    acc = np.zeros((size, size), np.float32)
    for octave, weight in ((4, 1.0), (16, 0.6), (64, 0.4), (size, 0.3)):
        small = rng.standard_normal((octave, octave)).astype(np.float32)
        acc += weight * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    acc = acc / (acc.std() + 1e-6)
    tex = np.asarray(base_rgb, np.float32)[None, None, :] + contrast * acc[..., None] * np.array(
        [1.0, 0.9, 0.8], np.float32
    )
    return np.clip(tex, 0, 255).astype(np.uint8)


def blurred_noise_texture(
    h: int,
    w: int,
    *,
    seed: int,
    blur_px: float = 1.0,
    base: tuple[int, int, int] | None = None,
    amplitude: float = 110.0,
) -> np.ndarray:
    """An (h, w, 3) uint8 band-limited random texture: white noise blurred by `blur_px`, fine grain only.

    Around mid-grey with independent colour channels, or, when `base` is given, around that colour with
    one luminance texture shared by the channels (so the hue stays the same everywhere: a plain-coloured
    object). `amplitude` is twice the standard deviation in digital numbers (before clipping).
    """
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w, 3)).astype(np.float32), (0, 0), blur_px)
    noise = noise / (noise.std() + 1e-6)
    centre = np.full(3, 128.0, np.float32) if base is None else np.asarray(base, np.float32)
    if base is not None:
        noise = np.repeat(noise[..., :1], 3, axis=2)
    return np.clip(centre + amplitude * 0.5 * noise, 0, 255).astype(np.uint8)
