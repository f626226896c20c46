"""`labeler export rerun DATASET --out lab.rrd`: a Rerun recording, one step of the `sample` timeline per
sample, for the Rerun viewer (`rerun lab.rrd`).

Entities (the camera frame is the world frame: X right, Y down, Z forward, metres):

- `world/camera/image`: the rectified left camera as a `Pinhole` (fx, fy, cx, cy from the calibration's
  P1, the image size), with `rgb` (the rectified left image), `depth` (`DepthImage`, metres; invalid
  pixels 0, Rerun's "no depth") and `masks` (`SegmentationImage` of instance_ids, with an
  `AnnotationContext` naming each object `object <id> · <median depth> m`);
- `world/points`: the valid depth back-projected to 3-D, coloured by the image (every `stride`-th pixel
  in each direction, so a point cloud stays at most `max_points`);
- `world/sample`: the sample id, its doubt and review decision as a text log line;
- `licences` (static): a `TextDocument` (markdown) naming the dataset version, the selection and the
  licence of every model in the labels' history (data_schema/licences.py).

Review decisions, `--selection` and `--strict-licence` are honoured as in every export
(labeler/export/coco.py `open_export`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from data_schema.licences import ModelLicence
from labeler.export.coco import ExportScope

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
        for step, s in enumerate(src.samples(names)):
            a = s.arrays
            rec.set_time("sample", sequence=step)
            depth = np.nan_to_num(a["depth_m"], nan=0.0).astype(np.float32)
            labels = [
                rr.AnnotationInfo(id=o.id, label=f"object {o.id}" + _depth_label(o.depth_m_median))
                for o in s.objects
            ]
            rec.log("world/camera/image/rgb", rr.Image(a["left"]))
            rec.log("world/camera/image/depth", rr.DepthImage(depth, meter=1.0))
            rec.log("world/camera/image/masks", rr.AnnotationContext(labels))
            rec.log("world/camera/image/masks", rr.SegmentationImage(a["instance_ids"]))
            pts, colours = back_project(a["depth_m"], a["left"], k, stride=stride)
            rec.log("world/points", rr.Points3D(pts, colors=colours))
            doubt = "n/a" if s.doubt is None else f"{s.doubt:.2f}"
            rec.log(
                "world/sample",
                rr.TextLog(f"{s.record.sample_id} · doubt {doubt} · review {s.review or 'none'}"),
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


def _depth_label(depth_m: float | None) -> str:
    return f" · {depth_m:.2f} m" if depth_m is not None else ""
