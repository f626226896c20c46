"""What a run folder shows a person: metrics as CSV + JSON, curves PNG, prediction previews PNG
(every task of the engine; the default columns and the preview row are the heads')."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.manifest import ObjectRecord
from data_schema.record import Record
from labeler.io import write_png, write_text_atomic

EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_depth",
    "train_seg",
    "heldout_loss",
    "abs_rel",
    "delta1",
    "fg_iou",
    "mask_miou",
    "mask_ap50",
    "lr",
    "seconds",
    "train_samples_per_s",
)
STEP_COLUMNS = ("step", "epoch", "loss", "depth", "seg", "lr")
DISPLAY_HEIGHT = 240


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_metrics(
    run_dir: Path,
    history: Sequence[Record],
    steps: Sequence[dict[str, Any]],
    *,
    epoch_columns: Sequence[str] = EPOCH_COLUMNS,
    step_columns: Sequence[str] = STEP_COLUMNS,
) -> None:
    """metrics.csv / metrics.json (one row per epoch; a figure the run has not is an empty cell / absent)
    and steps.csv (one row per optimiser step). The default columns are the heads'."""
    rows = [h.model_dump(exclude_none=True) for h in history]
    write_text_atomic(run_dir / "metrics.csv", _csv(rows, epoch_columns))
    write_text_atomic(run_dir / "metrics.json", json.dumps(_json_safe(rows), indent=1))
    write_text_atomic(run_dir / "steps.csv", _csv(steps, step_columns))


def figures_line(row: Record) -> str:
    """Every figure of an epoch record that it has ("name value, ..."), the epoch number left out."""
    return ", ".join(f"{k} {v:.4g}" for k, v in row.model_dump().items() if k != "epoch" and v is not None)


def write_curves(
    path: Path,
    history: Sequence[Any],
    steps: Sequence[dict[str, Any]],
    *,
    title: str,
    panels: Sequence[tuple[Sequence[str], str]],
) -> None:
    """Loss per step and per epoch (train_loss, heldout_loss where the records have them), then one panel
    per (record fields, title) of `panels`, against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(5 * (1 + len(panels)), 4.2), squeeze=False)
    axes = axes[0]  # one row (also with no panel beside the loss)
    ax = axes[0]
    if steps:
        ax.plot(
            [s["step"] for s in steps], [s["loss"] for s in steps], color="0.75", lw=0.8, label="train (step)"
        )
    spe = max(1, len(steps) // max(1, len(history))) if steps else 1
    for key, style in (("train_loss", "-o"), ("heldout_loss", "-s")):
        pts = [(h.epoch * spe, getattr(h, key, None)) for h in history if _finite(getattr(h, key, None))]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, ms=4, label=key.replace("_", " "))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    for ax, (keys, name) in zip(axes[1:], panels, strict=True):
        for key in keys:
            pts = [(h.epoch, getattr(h, key)) for h in history if _finite(getattr(h, key))]
            if pts:
                ax.plot(*zip(*pts, strict=True), "-o", ms=4, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def caption(width: int, text: str) -> np.ndarray:
    import cv2

    strip = np.full((18, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def preview_row(
    image: np.ndarray,
    *,
    sample_id: str,
    target_depth: np.ndarray | None = None,
    pred_depth: np.ndarray | None = None,
    target_ids: np.ndarray | None = None,
    target_objects: Sequence[ObjectRecord] | None = None,
    pred_ids: np.ndarray | None = None,
    pred_objects: Sequence[ObjectRecord] | None = None,
) -> np.ndarray:
    """image | stereo depth | predicted depth | pseudo-masks | predicted objects ("3: 1.52 m"), captioned;
    a tile is left out when its map is None. Depths share one colour scale (1st-99th percentile of the
    stereo depth, else of the predicted). Small inputs are enlarged (nearest for maps and ids) to at least
    `DISPLAY_HEIGHT` rows so the labels stay readable.

    Args:
        image: (H, W, 3) uint8 RGB.
        sample_id: caption of the image tile.
        target_depth, pred_depth: (H, W) metres, NaN or <= 0 where none.
        target_ids, pred_ids: (H, W) instance ids, 0 = none; objects: their records (bbox, depth).
    """
    from labeler.previews import colourise, mask_overlay

    k = max(1, math.ceil(DISPLAY_HEIGHT / image.shape[0]))
    if k > 1:
        image = np.repeat(np.repeat(image, k, axis=0), k, axis=1)
        target_depth, pred_depth, target_ids, pred_ids = (
            None if a is None else np.repeat(np.repeat(a, k, axis=0), k, axis=1)
            for a in (target_depth, pred_depth, target_ids, pred_ids)
        )
        target_objects, pred_objects = (
            None if objs is None else [o.model_copy(update={"bbox": [v * k for v in o.bbox]}) for o in objs]
            for objs in (target_objects, pred_objects)
        )
    tiles, names = [image], [sample_id]
    ref = target_depth if target_depth is not None else pred_depth
    if ref is not None:
        finite = ref[np.isfinite(ref) & (ref > 0)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        for d, name in ((target_depth, "stereo depth"), (pred_depth, "model depth")):
            if d is not None:
                tiles.append(colourise(np.where(d > 0, d, np.nan), float(lo), float(hi)))
                names.append(f"{name} {lo:.1f}-{hi:.1f} m")
    for ids, objs, name in ((target_ids, target_objects, "pseudo-masks"), (pred_ids, pred_objects, "model")):
        if ids is not None:
            tiles.append(mask_overlay(image, ids, list(objs or [])))
            names.append(f"{name}: {len(objs or [])} objects")
    captions = [caption(t.shape[1], n) for t, n in zip(tiles, names, strict=True)]
    return np.vstack([np.hstack(captions), np.hstack(tiles)])


def write_previews(path: Path, rows: Sequence[np.ndarray]) -> None:
    if rows:
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        write_png(path, np.vstack(padded))
