"""`labeler predict`: monocular images -> metric depth, objects with their depth, overlay PNG, JSON.

    predictor = HeadsPredictor.from_run("runs/lab-v1")
    result = predictor.predict(rgb)          # (H, W, 3) uint8 -> depth (H, W) m, ids (H, W), objects

Inputs: one image, a folder of images, or a rectified-pairs folder (left/ + right/). A frame at least
2.2 times as wide as it is high is taken as an Arducam side-by-side frame and its left half is used
(`--layout` forces one reading). With `--calib` and a right image (pairs or side-by-side, rectified),
SGBM depth of the pair is computed and the prediction is reported against it.

A video (or a folder of videos) or a folder of frames named by their timestamps is a sequence: a video is
decoded once, in order (labeler/rig/captures.py `read_video_frames`, every `--stride`-th frame), and each
frame's objects are linked to those of the frames before by the tracker `labeler run --track` uses
(labeler/segment/track.py): they carry a `track_id`, and `predictions.json` a summary of each track ("person
1 at 2.60 m … 1.10 m, approaching 0.50 m/s"). A frame the video does not hold (truncated) is that frame's
failure; a track survives up to `max_gap_frames` missing frames.

Per image, in OUT: `<stem>.json` (ImagePrediction), `<stem>_overlay.png`, `<stem>_depth.npy` (float32 m,
NaN where the model has no depth head), `<stem>_ids.png` (uint16, 0 = none); and `predictions.json`
(PredictionSet). A video frame's stem is `<video>_f<frame>`. The records are in data_schema/predictions.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from data_schema.commands import PredictConfig
from data_schema.manifest import TrackRow
from data_schema.predictions import (
    ImagePrediction,
    PredictedObject,
    PredictFailure,
    PredictionSet,
    PredictSkipped,
    StereoComparison,
)
from labeler.errors import InputError, LabelerError
from labeler.segment.track import IouDepthTracker
from labeler.train.heads.predictor import HeadsPredictor

# The records live in data_schema/predictions.py; imported here for callers of labeler.predict.
__all__ = [
    "ImagePrediction",
    "PredictedObject",
    "PredictionSet",
    "StereoComparison",
    "predict_images",
    "summary_line",
    "track_line",
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


Loaded = tuple[Resolved, np.ndarray, np.ndarray | None]  # the layout, left (H, W, 3) uint8, right or None


def load_input(item: InputImage) -> Loaded:
    """(the resolved layout, left (H, W, 3) uint8, right or None)."""
    from labeler.io import read_rgb

    rgb = read_rgb(item.path)
    if item.layout == "pairs":
        return "pairs", rgb, read_rgb(item.right_path) if item.right_path else None
    return split_frame(rgb, item.layout, item.path)


def split_frame(rgb: np.ndarray, layout: str, path: Path) -> Loaded:
    """A frame as mono, or the halves of a side-by-side frame (`auto`: at least 2.2 times as wide as high)."""
    from labeler.rig.captures import split_side_by_side

    h, w = rgb.shape[:2]
    if layout == "side-by-side" or (layout == "auto" and w >= SIDE_BY_SIDE_MIN_ASPECT * h):
        left, right = split_side_by_side(rgb, path)
        return "side-by-side", left, right
    return "mono", rgb, None


# ------------------------------------------------------------------ sequences


@dataclass(frozen=True)
class FrameInput:
    """One frame of a sequence: where it comes from and its place in the sequence."""

    image: Path  # the frame's file, or the video
    stem: str
    sequence: str
    frame_index: int
    timestamp_s: float | None
    item: InputImage | None  # a frame file; None: a video frame


def _is_video_input(inputs: Path) -> bool:
    """A video file, or a folder of videos with no images and no left/ + right/."""
    from labeler.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    if inputs.is_file():
        return inputs.suffix.lower() in VIDEO_SUFFIXES
    if not inputs.is_dir() or (inputs / "left").is_dir():
        return False
    names = [p.suffix.lower() for p in inputs.iterdir() if p.is_file()]
    return any(n in VIDEO_SUFFIXES for n in names) and not any(n in IMAGE_SUFFIXES for n in names)


def discover_sequence(inputs: Path, layout: str, stride: int) -> list[FrameInput] | None:
    """The frames of the sequences `inputs` holds, in sequence and frame order; None when it holds none (an
    image, a folder of frames not all named by a timestamp). Video frames are listed from the container's
    count, never decoded here; a gap in a folder's timestamps is one warning and skipped frame numbers."""
    from data_schema.captures import CaptureLayout, StereoPairSource
    from labeler.rig.captures import as_sequence, discover_pairs, safe_id

    if _is_video_input(inputs):
        if layout == "pairs":
            raise InputError(inputs, "--layout pairs needs left/ and right/ folders", "use --layout auto")
        return [
            FrameInput(
                Path(s.left_path), s.pair_id, s.sequence or "", s.frame_index or 0, s.timestamp_s, None
            )
            for s in discover_pairs(inputs, layout=CaptureLayout.video, stride=stride)
        ]
    if not inputs.is_dir():
        return None
    items = {str(it.path): it for it in discover_inputs(inputs, layout)}
    sources = as_sequence(
        inputs,
        [
            StereoPairSource(pair_id=safe_id(it.stem), layout=CaptureLayout.side_by_side, left_path=p)
            for p, it in items.items()
        ],
    )
    if not sources or sources[0].sequence is None:
        return None
    return [
        FrameInput(
            Path(s.left_path),
            items[s.left_path].stem,
            s.sequence or "",
            s.frame_index or 0,
            s.timestamp_s,
            items[s.left_path],
        )
        for s in sources
    ]


def load_frames(frames: list[FrameInput], layout: str) -> Iterator[tuple[FrameInput, Loaded | LabelerError]]:
    """Each frame with its image or its one-line error, in the order given; a run of one video's frames is
    decoded in one sequential pass."""
    from labeler.rig.captures import read_video_frames

    k = 0
    while k < len(frames):
        f = frames[k]
        if f.item is not None:
            try:
                yield f, load_input(f.item)
            except LabelerError as err:
                yield f, err
            k += 1
            continue
        run = [f]
        while k + len(run) < len(frames) and frames[k + len(run)].image == f.image:
            run.append(frames[k + len(run)])
        k += len(run)
        by_index = {r.frame_index: r for r in run}
        for i, rgb in read_video_frames(f.image, sorted(by_index)):
            try:
                yield by_index[i], rgb if isinstance(rgb, LabelerError) else split_frame(rgb, layout, f.image)
            except LabelerError as err:
                yield by_index[i], err


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
    'frame_0042.png: person 1 at 1.52 m, forklift 1 at 3.10 m'. A sequence's frame is named with its frame
    number and its objects by their tracks: 'walk.avi frame 12: person 3 at 1.52 m'."""
    from labeler.previews import object_names

    name = Path(pred.image).name
    if pred.frame_index is not None:
        name += f" frame {pred.frame_index}"
    named = object_names([o.id for o in pred.objects], [o.class_name for o in pred.objects])
    # "person 1" from a model trained on classes (numbered within the class), else "object 3"; by track
    called = {
        o.id: f"{o.class_name or 'object'} {o.track_id}"
        if o.track_id is not None
        else named[o.id]
        if o.class_name is not None
        else f"object {o.id}"
        for o in pred.objects
    }
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


def track_line(t: TrackRow) -> str:
    """'walk: person 1 at 2.60 m … 1.10 m, approaching 0.50 m/s (frames 0-31, 31 seen)'."""
    called = f"{t.sequence}: {t.class_name or 'object'} {t.track_id}"
    if t.depth_m_first is None or t.depth_m_last is None:
        text = f"{called} (no depth)"
    elif t.first_frame == t.last_frame:
        text = f"{called} at {t.depth_m_first:.2f} m"
    else:
        text = f"{called} at {t.depth_m_first:.2f} m … {t.depth_m_last:.2f} m"
    v = t.approach_speed_m_s
    if v is not None:
        text += f", {'approaching' if v >= 0 else 'receding'} {abs(v):.2f} m/s"
    return text + f" (frames {t.first_frame}-{t.last_frame}, {t.frames_seen} seen)"


def _predict_frame(
    predictor: HeadsPredictor,
    cfg: PredictConfig,
    image: Path,
    stem: str,
    loaded: Loaded,
    meta: FrameInput | None = None,
    tracker: IouDepthTracker | None = None,
) -> ImagePrediction:
    """Predict one image, write its files; a sequence's frame (`meta`) has its objects linked to their
    tracks by `tracker`, which sees the sequence's frames in order."""
    from labeler.io import write_png, write_text_atomic
    from labeler.train.heads.instances import object_table
    from labeler.train.report import preview_row

    mc = predictor.model_config
    layout, left, right = loaded
    res = predictor.predict(left)
    stereo = (
        stereo_depth(left, right, cfg.calib, z_far_m=mc.max_depth_m)
        if cfg.calib is not None and right is not None
        else None
    )
    records = object_table(res.ids, np.clip(res.scores, 0, 1), res.depth_m)
    stereo_records = object_table(res.ids, res.scores, stereo) if stereo is not None else None
    names = {r.id: res.class_names[r.id - 1] if res.class_names is not None else None for r in records}
    track = (
        tracker.step(meta.frame_index, res.ids, {r.id: r.depth_m_median for r in records}, names)
        if meta is not None and tracker is not None
        else {}
    )
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
            class_name=names[r.id],
            track_id=track.get(r.id),
        )
        for i, r in enumerate(records)
    ]
    paths = {k: cfg.out / f"{stem}_{k}" for k in ("depth.npy", "ids.png", "overlay.png")}
    if res.depth_m is not None:
        np.save(paths["depth.npy"], res.depth_m)
    write_png(paths["ids.png"], res.ids)
    overlay = preview_row(
        left,
        sample_id=image.name if meta is None or meta.item else f"{image.name} frame {meta.frame_index}",
        target_depth=stereo,
        pred_depth=res.depth_m,
        pred_ids=res.ids,
        pred_objects=records,
    )
    write_png(paths["overlay.png"], overlay)
    pred = ImagePrediction(
        image=str(image),
        layout=layout,
        width=left.shape[1],
        height=left.shape[0],
        run=str(cfg.run),
        checkpoint_epoch=predictor.epoch,
        weights=predictor.weights,
        task=mc.task,
        max_depth_m=mc.max_depth_m,
        depth_path=str(paths["depth.npy"]) if res.depth_m is not None else None,
        ids_path=str(paths["ids.png"]),
        overlay_path=str(paths["overlay.png"]),
        depth_m_median=float(np.median(res.depth_m)) if res.depth_m is not None else None,
        objects=objects,
        stereo=compare_depth(res.depth_m, stereo) if stereo is not None and res.depth_m is not None else None,
        sequence=meta.sequence if meta else None,
        frame_index=meta.frame_index if meta else None,
        timestamp_s=meta.timestamp_s if meta else None,
    )
    write_text_atomic(cfg.out / f"{stem}.json", pred.model_dump_json(indent=1))
    return pred


def predict_images(cfg: PredictConfig) -> PredictionSet:
    """Predict every input image (every frame of a sequence, its objects tracked), write its files into
    cfg.out, return the set (also predictions.json)."""
    from labeler.io import write_text_atomic
    from labeler.models.device import torch_device

    predictor = HeadsPredictor.from_run(
        cfg.run, checkpoint=cfg.checkpoint, device=torch_device(cfg.gpu), instances=cfg.instances
    )
    frames = discover_sequence(cfg.inputs, cfg.layout, cfg.stride)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    if frames is None:
        for item in discover_inputs(cfg.inputs, cfg.layout):
            try:  # one unreadable or truncated image is that image's failure, not the run's
                loaded = load_input(item)
            except LabelerError as err:
                failures.append(PredictFailure(image=str(item.path), error=str(err)))
                continue
            results.append(_predict_frame(predictor, cfg, item.path, item.stem, loaded))
        out = PredictionSet(run=str(cfg.run), images=results, failures=failures)
    else:
        out = _predict_sequences(predictor, cfg, frames)
    write_text_atomic(cfg.out / "predictions.json", out.model_dump_json(indent=1))
    return out


def _predict_sequences(
    predictor: HeadsPredictor, cfg: PredictConfig, frames: list[FrameInput]
) -> PredictionSet:
    """Every frame in order, one tracker per sequence (track ids count on over the sequences)."""
    from labeler.rig.still import StillFilter
    from labeler.segment.track import Sighting, track_row

    results, failures, skipped = [], [], []
    seen: dict[int, list[Sighting]] = defaultdict(list)
    sequence_of: dict[int, str] = {}
    tracker, current = IouDepthTracker(cfg.tracking), frames[0].sequence if frames else None
    still = StillFilter(cfg.still_threshold_dn)
    for f, got in load_frames(frames, cfg.layout):
        if f.sequence != current:  # a new sequence: a fresh tracker, ids go on counting
            tracker, current = IouDepthTracker(cfg.tracking, first_id=tracker.next_id), f.sequence
            still = StillFilter(cfg.still_threshold_dn)
        if isinstance(got, LabelerError):  # a frame the video does not hold: the tracker sees a gap
            failures.append(PredictFailure(image=f"{f.image} frame {f.frame_index}", error=str(got)))
            continue
        kept = None if cfg.keep_duplicates else still.duplicate_of(str(f.frame_index), got[1])
        if kept is not None:  # as `labeler run`: a still frame costs no model time, the tracker sees a gap
            skipped.append(
                PredictSkipped(image=str(f.image), frame_index=f.frame_index, duplicate_of_frame=int(kept))
            )
            continue
        pred = _predict_frame(predictor, cfg, f.image, f.stem, got, f, tracker)
        results.append(pred)
        for o in pred.objects:
            assert o.track_id is not None
            seen[o.track_id].append(Sighting(f.frame_index, f.timestamp_s, o.depth_m_median, o.class_name))
            sequence_of[o.track_id] = f.sequence
    tracks = [track_row(t, sequence_of[t], seen[t]) for t in sorted(seen)]
    return PredictionSet(
        run=str(cfg.run),
        images=results,
        failures=failures,
        skipped=skipped,
        tracks=tracks,
        tracking=cfg.tracking,
    )
