"""`labeler predict`: monocular images -> metric depth, objects with their depth, overlay PNG, JSON.

    predictor = HeadsPredictor.from_run("runs/lab-v1")
    result = predictor.predict(rgb)          # (H, W, 3) uint8 -> depth (H, W) m, ids (H, W), objects

Inputs: one image, a folder of images, or a rectified-pairs folder (left/ + right/). A frame at least
2.2 times as wide as it is high is taken as an Arducam side-by-side frame and its left half is used
(`--layout` forces one reading). With `--calib` and a right image (pairs or side-by-side, rectified),
SGBM depth of the pair is computed and the prediction is reported against it.

Per image, in OUT: `<stem>.json` (ImagePrediction), `<stem>_overlay.png`, `<stem>_depth.npy` (float32 m,
NaN where the model has no depth head), `<stem>_ids.png` (uint16, 0 = none); and `predictions.json`
(PredictionSet). The records are in data_schema/predictions.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data_schema.commands import PredictConfig
from data_schema.predictions import (
    ImagePrediction,
    PredictedObject,
    PredictFailure,
    PredictionSet,
    StereoComparison,
)
from labeler.errors import InputError, LabelerError
from labeler.train.heads.predictor import HeadsPredictor

# The records live in data_schema/predictions.py; imported here for callers of labeler.predict.
__all__ = [
    "ImagePrediction",
    "PredictedObject",
    "PredictionSet",
    "StereoComparison",
    "predict_images",
    "summary_line",
]

SIDE_BY_SIDE_MIN_ASPECT = 2.2


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class InputImage:
    """An input file; `layout` is as requested ("auto" is resolved by `load_input`)."""

    path: Path
    stem: str
    layout: Literal["auto", "mono", "side-by-side", "pairs"]
    right_path: Path | None = None  # pairs


def discover_inputs(inputs: Path, layout: str) -> list[InputImage]:
    """The images to predict, in name order; a left/ + right/ folder is read as rectified pairs."""
    from labeler.io import IMAGE_SUFFIXES

    if not inputs.exists():
        raise InputError(
            inputs, "no such file or folder", "pass an image, a folder of images or left/ + right/"
        )
    if inputs.is_dir() and (inputs / "left").is_dir() and layout in ("auto", "pairs"):
        out = []
        for p in sorted(q for q in (inputs / "left").iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
            right = inputs / "right" / p.name
            out.append(InputImage(p, p.stem, "pairs", right if right.is_file() else None))
        return out
    files = (
        [inputs]
        if inputs.is_file()
        else sorted(p for p in inputs.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    )
    if not files:
        raise InputError(inputs, "no images (png, jpg, ...)", "pass an image or a folder of images")
    if layout == "pairs":
        raise InputError(inputs, "--layout pairs needs left/ and right/ folders", "use --layout auto")
    return [InputImage(p, p.stem, layout) for p in files]  # type: ignore[arg-type]


Resolved = Literal["mono", "side-by-side", "pairs"]


def load_input(item: InputImage) -> tuple[Resolved, np.ndarray, np.ndarray | None]:
    """(the resolved layout, left (H, W, 3) uint8, right or None)."""
    from labeler.io import read_rgb
    from labeler.rig.captures import split_side_by_side

    rgb = read_rgb(item.path)
    if item.layout == "pairs":
        return "pairs", rgb, read_rgb(item.right_path) if item.right_path else None
    h, w = rgb.shape[:2]
    if item.layout == "side-by-side" or (item.layout == "auto" and w >= SIDE_BY_SIDE_MIN_ASPECT * h):
        left, right = split_side_by_side(rgb, item.path)
        return "side-by-side", left, right
    return "mono", rgb, None


# ------------------------------------------------------------------ stereo reference


def stereo_depth(left: np.ndarray, right: np.ndarray, calib_path: Path, *, z_far_m: float) -> np.ndarray:
    """SGBM metric depth (H, W) float32 of a rectified pair, NaN invalid."""
    from data_schema.backends import SgbmConfig
    from labeler.depth import depth_settings, disparity_to_depth
    from labeler.rig.calibration import load_calibration
    from labeler.stereo.base import STEREO_BACKENDS

    calib = load_calibration(calib_path)
    w, h = calib.image_size
    if (left.shape[1], left.shape[0]) != (w, h):
        raise InputError(
            calib_path,
            f"calibration is for {w}x{h} images, the pair is {left.shape[1]}x{left.shape[0]}",
            "pass the calibration of the rig that took it",
        )
    disp = STEREO_BACKENDS.shared(SgbmConfig(), device="cpu").disparity(left, right)
    return disparity_to_depth(disp.disparity_px, depth_settings(calib, z_far_m=z_far_m))


def compare_depth(pred_m: np.ndarray, stereo_m: np.ndarray) -> StereoComparison | None:
    """AbsRel, δ1 (labeler/train/heads/metrics.py, as in training) and the scale of predicted (H, W) metres
    against stereo (H, W) metres; None when no pixel has both."""
    from labeler.train.heads.metrics import depth_pairs, depth_sums

    p, g = depth_pairs(pred_m, stereo_m)
    if not g.size:
        return None
    abs_rel_sum, delta1_hits = depth_sums(p, g)
    return StereoComparison(
        abs_rel=abs_rel_sum / g.size,
        delta1=delta1_hits / g.size,
        median_ratio=float(np.median(p / g)),
        stereo_valid_fraction=g.size / stereo_m.size,
    )


# ------------------------------------------------------------------ the command


def summary_line(pred: ImagePrediction) -> str:
    """'frame_0042.png: object 1 at 0.84 m, object 2 at 1.52 m' (+ the stereo comparison); with classes
    'frame_0042.png: person 1 at 1.52 m, forklift 1 at 3.10 m'."""
    from labeler.previews import object_names

    name = Path(pred.image).name
    named = object_names([o.id for o in pred.objects], [o.class_name for o in pred.objects])
    # "person 1" from a model trained on classes (numbered within the class), else "object 3"
    called = {o.id: named[o.id] if o.class_name is not None else f"object {o.id}" for o in pred.objects}
    if pred.objects:
        parts = [
            f"{called[o.id]} at {o.depth_m_median:.2f} m"
            if o.depth_m_median is not None
            else f"{called[o.id]} (no depth)"
            for o in pred.objects
        ]
        text = f"{name}: {', '.join(parts)}"
    elif pred.depth_m_median is not None:
        text = f"{name}: no objects; median depth {pred.depth_m_median:.2f} m"
    else:
        text = f"{name}: no objects"
    if pred.stereo is not None:
        s = pred.stereo
        text += f"  [vs stereo: AbsRel {s.abs_rel:.3f}, δ1 {s.delta1:.3f}, scale {s.median_ratio:.2f}]"
    return text


def predict_images(cfg: PredictConfig) -> PredictionSet:
    """Predict every input image, write its files into cfg.out, return the set (also predictions.json)."""
    from labeler.io import write_png, write_text_atomic
    from labeler.models.device import torch_device
    from labeler.train.heads.instances import object_table
    from labeler.train.report import preview_row

    device = torch_device(cfg.gpu)
    predictor = HeadsPredictor.from_run(
        cfg.run, checkpoint=cfg.checkpoint, device=device, instances=cfg.instances
    )
    mc = predictor.model_config
    items = discover_inputs(cfg.inputs, cfg.layout)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results = []
    failures = []
    for item in items:
        try:  # one unreadable or truncated image is that image's failure, not the run's
            layout, left, right = load_input(item)
        except LabelerError as err:
            failures.append(PredictFailure(image=str(item.path), error=str(err)))
            continue
        res = predictor.predict(left)
        stereo = (
            stereo_depth(left, right, cfg.calib, z_far_m=mc.max_depth_m)
            if cfg.calib is not None and right is not None
            else None
        )
        records = object_table(res.ids, np.clip(res.scores, 0, 1), res.depth_m)
        stereo_records = object_table(res.ids, res.scores, stereo) if stereo is not None else None
        objects = [
            PredictedObject(
                id=r.id,
                area_px=r.area_px,
                bbox=r.bbox,
                score=r.score,
                depth_m_median=r.depth_m_median,
                depth_m_p10=r.depth_m_p10,
                depth_m_p90=r.depth_m_p90,
                stereo_depth_m_median=stereo_records[i].depth_m_median if stereo_records else None,
                class_name=res.class_names[r.id - 1] if res.class_names is not None else None,
            )
            for i, r in enumerate(records)
        ]
        depth_path = cfg.out / f"{item.stem}_depth.npy"
        if res.depth_m is not None:
            np.save(depth_path, res.depth_m)
        write_png(cfg.out / f"{item.stem}_ids.png", res.ids)
        overlay = preview_row(
            left,
            sample_id=item.path.name,
            target_depth=stereo,
            pred_depth=res.depth_m,
            pred_ids=res.ids,
            pred_objects=records,
        )
        write_png(cfg.out / f"{item.stem}_overlay.png", overlay)
        pred = ImagePrediction(
            image=str(item.path),
            layout=layout,
            width=left.shape[1],
            height=left.shape[0],
            run=str(cfg.run),
            checkpoint_epoch=predictor.epoch,
            weights=predictor.weights,
            task=mc.task,
            max_depth_m=mc.max_depth_m,
            depth_path=str(depth_path) if res.depth_m is not None else None,
            ids_path=str(cfg.out / f"{item.stem}_ids.png"),
            overlay_path=str(cfg.out / f"{item.stem}_overlay.png"),
            depth_m_median=float(np.median(res.depth_m)) if res.depth_m is not None else None,
            objects=objects,
            stereo=compare_depth(res.depth_m, stereo)
            if stereo is not None and res.depth_m is not None
            else None,
        )
        write_text_atomic(cfg.out / f"{item.stem}.json", pred.model_dump_json(indent=1))
        results.append(pred)
    out = PredictionSet(run=str(cfg.run), images=results, failures=failures)
    write_text_atomic(cfg.out / "predictions.json", out.model_dump_json(indent=1))
    return out
