"""The sample page's layers as PNG bytes, and the per-pixel maps the pointer readout uses.

Layers share the image's size so the page stacks them: `left` (rectified RGB), `disparity` and `depth`
(turbo, 1st to 99th percentile of the sample, NaN transparent), `masks` (each object in its own colour,
background transparent, outlines white).
"""

from __future__ import annotations

import numpy as np

LAYERS = ("left", "disparity", "depth", "masks")


def _png(rgba: np.ndarray) -> bytes:
    import cv2

    code = cv2.COLOR_RGBA2BGRA if rgba.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgba), code))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def value_range(values: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the finite values ((0, 1) without any)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    return float(lo), float(max(hi, lo + 1e-6))


def palette(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 colours, id 0 black; the same ids get the same colours on every page."""
    rng = np.random.default_rng(7)
    out = rng.integers(60, 256, (max(n, 1) + 1, 3)).astype(np.uint8)
    out[0] = 0
    return out


def colour_layer(values: np.ndarray) -> tuple[bytes, tuple[float, float]]:
    """A float map as RGBA turbo PNG (NaN transparent) and the (lo, hi) it spans."""
    from labeler.previews import colourise

    lo, hi = value_range(values)
    rgba = np.dstack([colourise(values, lo, hi), np.where(np.isfinite(values), 255, 0).astype(np.uint8)])
    return _png(rgba), (lo, hi)


def masks_layer(ids: np.ndarray) -> bytes:
    """Objects tinted in their palette colour (alpha 170), outlines white, background transparent."""
    from labeler.doubt import outline

    colours = palette(int(ids.max()) if ids.size else 0)
    rgba = np.zeros((*ids.shape, 4), np.uint8)
    rgba[..., :3] = colours[ids]
    rgba[..., 3] = np.where(ids > 0, 170, 0)
    line = outline(ids)
    rgba[line] = (255, 255, 255, 255)
    return _png(rgba)


def object_thumb(left: np.ndarray, ids: np.ndarray, object_id: int, *, height_px: int = 120) -> bytes:
    """A frame `height_px` high with one object outlined (yellow, 2 px) and the rest dimmed: a track's
    strip shows where the object is in each frame. PNG bytes."""
    import cv2

    h, w = ids.shape
    size = (max(1, round(w * height_px / h)), height_px)
    interp = cv2.INTER_AREA if height_px < h else cv2.INTER_LINEAR
    rgb = cv2.resize(left, size, interpolation=interp)
    mask = cv2.resize((ids == object_id).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    out = np.where(mask[..., None] > 0, rgb, (rgb * 0.55).astype(np.uint8))
    out[edge] = (255, 220, 0)
    return _png(out)


def render(name: str, arrays: dict[str, np.ndarray]) -> bytes:
    """One layer of a sample as PNG bytes."""
    if name == "left":
        return _png(arrays["left"])
    if name in ("disparity", "depth"):
        return colour_layer(arrays["disparity_px" if name == "disparity" else "depth_m"])[0]
    if name == "masks":
        return masks_layer(arrays["instance_ids"])
    raise KeyError(f"no layer {name!r}; layers: {', '.join(LAYERS)}")


def pointer_maps(arrays: dict[str, np.ndarray]) -> bytes:
    """depth_m (H*W float32, little-endian, NaN invalid) then instance_ids (H*W uint16), row-major."""
    depth = np.ascontiguousarray(arrays["depth_m"], dtype="<f4").tobytes()
    ids = np.ascontiguousarray(arrays["instance_ids"], dtype="<u2").tobytes()
    return depth + ids
