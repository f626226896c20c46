"""`labeler export rerun DATASET --out lab.rrd`: a Rerun recording, one step of the `sample` timeline per
sample, for the Rerun viewer (`rerun lab.rrd`).

Timelines: `sample` (the step, every sample); for a frame of a video or timestamped folder also `frame`
(its frame index in its sequence) and `time` (its timestamp, s) where the dataset records them — still
frames a run skipped are not logged, so the viewer shows the frame they repeat there.

Entities (the camera frame is the world frame: X right, Y down, Z forward, metres):

- `world/camera/image`: the rectified left camera as a `Pinhole` (fx, fy, cx, cy from the calibration's
  P1, the image size), with `rgb` (the rectified left image), `depth` (`DepthImage`, metres; invalid
  pixels 0, Rerun's "no depth") and `masks` (`SegmentationImage` of instance_ids, with an
  `AnnotationContext` naming each object `object <id> · track <track id> · <median depth> m`, the track
  where the object has one);
- `world/points`: the valid depth back-projected to 3-D, coloured by the image (every `stride`-th pixel
  in each direction, so a point cloud stays at most `max_points`);
- `world/tracks/<track id>` (`--track` datasets): the track's object as one 3-D point, the centre of its
  box at its median depth, labelled `track <id>`, and `world/camera/image/tracks/<track id>` its box in
  the image: one entity per track, so the viewer follows a track over the timelines; a track absent from
  a frame is cleared there, and every track at the start of another sequence;
- `world/sample`: the sample id (and sequence), its doubt and review decision as a text log line;
- `licences` (static): a `TextDocument` (markdown) naming the dataset version, the selection and the
  licence of every model in the labels' history (data_schema/licences.py).

Review decisions, `--selection` and `--strict-licence` are honoured as in every export
(labeler/export/coco.py `open_export`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_schema.licences import ModelLicence
from data_schema.manifest import ObjectRow, SampleRecord
from labeler.export.coco import ExportScope

if TYPE_CHECKING:
    import rerun as rr

MAX_POINTS = 200_000


def back_project(
    depth_m: np.ndarray, rgb: np.ndarray, intrinsics: tuple[float, float, float, float], *, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 points in metres (camera frame) and (N, 3) uint8 colours of the valid pixels on a
    `stride` grid."""
    fx, fy, cx, cy = intrinsics
    z = depth_m[::stride, ::stride]
    v, u = np.mgrid[0 : depth_m.shape[0] : stride, 0 : depth_m.shape[1] : stride]
    ok = np.isfinite(z) & (z > 0)
    zz = z[ok]
    pts = np.stack([(u[ok] - cx) * zz / fx, (v[ok] - cy) * zz / fy, zz], axis=1).astype(np.float32)
    return pts, rgb[::stride, ::stride][ok]


def export_rerun(
    dataset_path: str | Path,
    out_path: str | Path,
    *,
    include_rejected: bool = False,
    max_points: int = MAX_POINTS,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the .rrd of a dataset (atomically); returns its path. `scope`: the selection,
    `--strict-licence` and include_rejected together (overrides the flag). An existing `out_path` is
    replaced only when it is a Rerun recording and `overwrite`."""
    import rerun as rr

    from labeler.export.coco import open_export
    from labeler.export.out_guard import check_export_out, rrd_ours
    from labeler.io import atomic_path, check_out_file

    out_path = check_out_file(out_path)  # a folder, or under a file: one line before the work
    check_export_out(out_path, dataset=Path(dataset_path), kind="Rerun", ours=rrd_ours, overwrite=overwrite)
    scope = scope or ExportScope(include_rejected=include_rejected)
    src = open_export(dataset_path, scope, what="Rerun export")
    ds = src.ds
    width, height = ds.manifest.calibration.image_size
    k = ds.manifest.calibration.rectification.left_intrinsics
    stride = max(1, math.ceil(math.sqrt(width * height / max_points)))
    with atomic_path(out_path) as tmp:
        rec = rr.RecordingStream("labeler", recording_id=ds.version)
        rec.save(str(tmp))
        rec.log("world", rr.ViewCoordinates.RDF, static=True)
        text = licences_markdown(ds.version, scope.selection, src.licences)
        rec.log("licences", rr.TextDocument(text, media_type=rr.MediaType.MARKDOWN), static=True)
        rec.log(
            "world/camera/image",
            rr.Pinhole(focal_length=[k[0], k[1]], principal_point=[k[2], k[3]], resolution=[width, height]),
            static=True,
        )
        names = ("left", "depth_m")
        live: set[int] = set()  # the tracks logged at the last sample
        sequence: str | None = None
        for step, s in enumerate(src.samples(names)):
            a = s.arrays
            _set_times(rec, step, s.record)
            if s.record.sequence != sequence:
                live = _clear_tracks(rec, live)
                sequence = s.record.sequence
            live = _log_tracks(rec, s.objects, live, k)
            depth = np.nan_to_num(a["depth_m"], nan=0.0).astype(np.float32)
            labels = [rr.AnnotationInfo(id=o.id, label=_object_label(o)) for o in s.objects]
            rec.log("world/camera/image/rgb", rr.Image(a["left"]))
            rec.log("world/camera/image/depth", rr.DepthImage(depth, meter=1.0))
            rec.log("world/camera/image/masks", rr.AnnotationContext(labels))
            rec.log("world/camera/image/masks", rr.SegmentationImage(a["instance_ids"]))
            pts, colours = back_project(a["depth_m"], a["left"], k, stride=stride)
            rec.log("world/points", rr.Points3D(pts, colors=colours))
            doubt = "n/a" if s.doubt is None else f"{s.doubt:.2f}"
            seq = f" · {sequence} frame {s.record.frame_index}" if sequence is not None else ""
            rec.log(
                "world/sample",
                rr.TextLog(f"{s.record.sample_id}{seq} · doubt {doubt} · review {s.review or 'none'}"),
            )
        rec.flush()
        rec.disconnect()
    return out_path


def licences_markdown(version: str, selection: str | None, licences: list[ModelLicence]) -> str:
    """The `licences` document: one line per model (data_schema/licences.py `describe`)."""
    from data_schema.licences import describe, licence_summary

    head = f"# labeler dataset {version[:12]}" + (f", selection {selection}" if selection else "")
    lines = [head, "", licence_summary(licences), "", *(f"- {describe(m)}" for m in licences)]
    return "\n".join(lines) + "\n"


def _object_label(o: ObjectRow) -> str:
    track = f" · track {o.track_id}" if o.track_id is not None else ""
    depth = f" · {o.depth_m_median:.2f} m" if o.depth_m_median is not None else ""
    return f"object {o.id}{track}{depth}"


def _set_times(rec: rr.RecordingStream, step: int, r: SampleRecord) -> None:
    """The sample's place on every timeline; the others reset, so a still pair after a video frame is on
    no frame or time."""
    rec.reset_time()
    rec.set_time("sample", sequence=step)
    if r.frame_index is not None:
        rec.set_time("frame", sequence=r.frame_index)
    if r.timestamp_s is not None:
        rec.set_time("time", duration=r.timestamp_s)


def _track_paths(track_id: int) -> tuple[str, str]:
    return f"world/tracks/{track_id}", f"world/camera/image/tracks/{track_id}"


def _clear_tracks(rec: rr.RecordingStream, tracks: set[int]) -> set[int]:
    import rerun as rr

    for tid in sorted(tracks):
        for path in _track_paths(tid):
            rec.log(path, rr.Clear(recursive=False))
    return set()


def _log_tracks(
    rec: rr.RecordingStream,
    objects: list[ObjectRow],
    live: set[int],
    intrinsics: tuple[float, float, float, float],
) -> set[int]:
    """Log each tracked object on its track's entities, clear the tracks of `live` not seen now; returns
    the tracks logged."""
    import rerun as rr

    fx, fy, cx, cy = intrinsics
    now: set[int] = set()
    for o in objects:
        if o.track_id is None:
            continue
        now.add(o.track_id)
        point_path, box_path = _track_paths(o.track_id)
        x, y, w, h = o.bbox
        name = f"track {o.track_id}" + (f" ({o.class_name})" if o.class_name else "")
        rec.log(box_path, rr.Boxes2D(array=[[x, y, w, h]], array_format=rr.Box2DFormat.XYWH, labels=[name]))
        if o.depth_m_median is not None:
            z = o.depth_m_median
            centre = [(x + w / 2 - cx) * z / fx, (y + h / 2 - cy) * z / fy, z]
            rec.log(point_path, rr.Points3D([centre], labels=[name], radii=0.03))
        else:
            rec.log(point_path, rr.Clear(recursive=False))
    _clear_tracks(rec, live - now)
    return now
