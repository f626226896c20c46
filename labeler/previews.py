"""Pictures people look at: a PNG per sample (the gallery pages that show them: labeler/review/gallery.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_schema.manifest import ObjectRecord
from labeler.dataset.shards import SampleArrays
from labeler.io import write_png


def object_names(ids: Sequence[int], class_names: Sequence[str | None]) -> dict[int, str]:
    """What an object is called in pictures and reports: "person 2" (the 2nd person by id) when its backend
    names classes, else its id ("3")."""
    seen: dict[str, int] = {}
    out = {}
    for oid, name in sorted(zip(ids, class_names, strict=True)):
        if name is None:
            out[oid] = str(oid)
        else:
            seen[name] = seen.get(name, 0) + 1
            out[oid] = f"{name} {seen[name]}"
    return out


def colourise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 RGB with the turbo map; NaN is black."""
    import cv2

    t = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = cv2.cvtColor(
        cv2.applyColorMap(np.nan_to_num(t * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB
    )
    rgb[~np.isfinite(values)] = 0
    return rgb


def _scale_bar(height: int, lo: float, hi: float, unit: str) -> np.ndarray:
    import cv2

    ramp = np.linspace(hi, lo, height, dtype=np.float32)[:, None].repeat(14, axis=1)
    bar = np.full((height, 78, 3), 255, np.uint8)
    bar[:, 4:18] = colourise(ramp, lo, hi)
    for frac in (0.0, 0.5, 1.0):
        y = int(round(frac * (height - 1)))
        value = hi + frac * (lo - hi)
        cv2.line(bar, (18, y), (24, y), (0, 0, 0), 1)
        cv2.putText(
            bar,
            f"{value:.1f}",
            (26, min(max(y + 4, 10), height - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.36,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(bar, unit, (26, height // 4), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def mask_overlay(image: np.ndarray, instance_ids: np.ndarray, objects: Sequence[ObjectRecord]) -> np.ndarray:
    """Each object tinted in its own colour with its outline and a "3: 1.52 m" label at its centre
    ("person 1: 1.52 m" for a class-naming backend's objects)."""
    import cv2

    out = image.astype(np.float32) * 0.55
    rng = np.random.default_rng(7)
    palette = rng.integers(60, 256, (int(instance_ids.max()) + 1, 3)).astype(np.float32)
    sel = instance_ids > 0
    out[sel] = out[sel] * 0.4 + palette[instance_ids[sel]] * 0.6
    out = out.astype(np.uint8)
    edges = cv2.morphologyEx(instance_ids.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
    out[edges & sel] = 255
    # Largest objects first; a label that would cover an earlier one is left out (the tint still shows).
    taken: list[tuple[int, int, int, int]] = []
    called = object_names([o.id for o in objects], [o.class_name for o in objects])
    for obj in sorted(objects, key=lambda o: -o.area_px):
        x, y, w, h = obj.bbox
        name = called[obj.id]
        label = f"{name}: {obj.depth_m_median:.2f} m" if obj.depth_m_median is not None else f"{name}: ?"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cx = int(np.clip(x + w // 2 - tw // 2, 3, instance_ids.shape[1] - tw - 3))
        cy = int(np.clip(y + h // 2 + th // 2, th + 4, instance_ids.shape[0] - 4))
        box = (cx - 2, cy - th - 3, cx + tw + 2, cy + 3)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
            continue
        taken.append(box)
        cv2.rectangle(out, box[:2], box[2:], (0, 0, 0), -1)
        cv2.putText(out, label, (cx, cy), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def preview_image(arrays: SampleArrays, objects: Sequence[ObjectRecord]) -> np.ndarray:
    """Rectified left | colourised disparity with a scale bar | labelled mask overlay."""
    d = arrays.disparity_px
    finite = d[np.isfinite(d)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    disp = np.hstack([colourise(d, lo, hi), _scale_bar(d.shape[0], float(lo), float(hi), "px")])
    return np.hstack([arrays.left, disp, mask_overlay(arrays.left, arrays.instance_ids, objects)])


def write_preview(path: str | Path, arrays: SampleArrays, objects: Sequence[ObjectRecord]) -> None:
    write_png(path, preview_image(arrays, objects))
