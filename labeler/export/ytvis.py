"""`labeler export ytvis DATASET --out FILE.json`: a `--track` dataset's tracks as one video-instance JSON in
the YouTube-VIS layout, the one video instance segmentation trackers and their loaders read (the
`youtubevos/cocoapi` YTVOS class, detectron2 / mmdetection / VITA / MinVIS data loaders).

- `videos`: one per sequence (in name order), `id` 1.., `name` the sequence, `width` / `height`,
  `length` = the frames listed, `file_names` one per frame in frame order; plus `sample_ids`,
  `frame_indices` and `timestamps_s` (null without timestamps) of those frames;
- `annotations`: one per track, `id` = its `track_id` (unique in the dataset; `track_id` too), `video_id`,
  `category_id`, `iscrowd` 0, `width` / `height`, and per listed frame of its video `segmentations` (COCO
  RLE with a compressed `counts` string, the pixels of its object), `bboxes` [x, y, w, h] px, `areas` px
  and `depths_m` (its object's median depth) — each null where the track is absent;
- `categories`: as `export coco` (labeler/export/coco.py): the class list of a class-naming backend, in
  order, else the single "object"; a track's category is its class (the tracks table);
- `info`: as `export coco`, with the tracking settings.

The frames of a video are its sequence's labelled frames, as every export leaves them (rejected samples
and objects out unless `--include-rejected`, `--selection`): the ok frames and the still frames the run
skipped as duplicates, which carry the labels (and the image) of the frame they repeat — skipping one says
nothing moved. A failed frame, or a rejected one, is not listed: `frame_indices` names the frames that
are, as YouTube-VIS itself lists every fifth frame. `file_name` is the rectified left image as the
manifest records it (relative to the dataset), or with `--images DIR` the PNG written there, relative to
the JSON's folder. The file is written atomically and is the same byte for byte for the same dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_schema.manifest import Manifest, ObjectRow, SampleRecord, TrackRow
from labeler.export.coco import (
    ExportScope,
    ExportSource,
    categories,
    dataset_info,
    open_export,
    write_left_png,
)

_Label = dict[str, Any]  # one object of a track at one frame: segmentation, bbox, area, depth_m
# an annotation's per-frame lists and the label each takes its items from
_PER_FRAME = {"segmentations": "segmentation", "bboxes": "bbox", "areas": "area", "depths_m": "depth_m"}


@dataclass(frozen=True)
class _Frame:
    """A labelled frame: its image's file name and its tracked objects by track id."""

    file_name: str
    labels: dict[int, _Label]


def export_ytvis(
    dataset_path: str | Path,
    out_path: str | Path,
    *,
    images: str | Path | None = None,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the YouTube-VIS JSON of a dataset labelled with `--track`; returns out_path.

    Args:
        dataset_path: a dataset folder written by `labeler run ... --track`.
        out_path: the JSON file to write (parent folders are created).
        images: if given, also write each labelled frame's rectified left image there as `<sample_id>.png`.
        scope: rejected samples kept or not, the selection, `--strict-licence`.
        overwrite: replace an earlier `export ytvis` file at out_path (anything else there is refused).

    Raises:
        InputError: the dataset has no tracks (one line), or `out_path` may not be written.
    """
    from labeler.dataset.tables import read_tracks
    from labeler.errors import InputError
    from labeler.export.out_guard import YTVIS_DESCRIPTION, check_export_out, ytvis_json_ours
    from labeler.io import check_out_file, write_text_atomic

    out_path = check_out_file(out_path)  # a folder, or under a file: one line before the work
    check_export_out(
        out_path, dataset=Path(dataset_path), kind="YouTube-VIS", ours=ytvis_json_ours, overwrite=overwrite
    )
    src = open_export(dataset_path, scope or ExportScope(), what="YouTube-VIS export")
    ds = src.ds
    if ds.manifest.tracks is None:
        raise InputError(
            ds.path,
            "has no tracks (it was labelled without --track)",
            "label the sequence with `labeler run ... --track`, or use `labeler export coco`",
        )
    tracks = {t.track_id: t for t in read_tracks(ds.path, ds.manifest.tracks)}
    frames = _labelled_frames(src, images, out_path.parent)
    videos, annotations = _entries(frames, _videos(src, frames), tracks, ds.manifest)
    doc = {
        "info": {
            **dataset_info(ds.manifest, f"{YTVIS_DESCRIPTION} (YouTube-VIS layout): tracks over sequences"),
            "tracking": ds.manifest.tracking.model_dump(mode="json") if ds.manifest.tracking else None,
            "model_licences": src.licence_json(),
        },
        "licenses": [],
        "videos": videos,
        "categories": categories(ds.manifest),
        "annotations": annotations,
    }
    write_text_atomic(out_path, json.dumps(doc, separators=(",", ":")))
    return out_path


def _entries(
    frames: dict[str, _Frame],
    listed_by_sequence: dict[str, list[tuple[SampleRecord, str]]],
    tracks: dict[int, TrackRow],
    manifest: Manifest,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `videos` (one per sequence, in name order) and their tracks' `annotations`."""
    width, height = manifest.calibration.image_size
    videos: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    category_of = {c["name"]: c["id"] for c in categories(manifest)}
    for video_id, (sequence, listed) in enumerate(sorted(listed_by_sequence.items()), 1):
        videos.append(
            {
                "id": video_id,
                "name": sequence,
                "width": width,
                "height": height,
                "length": len(listed),
                "file_names": [frames[f].file_name for _, f in listed],
                "sample_ids": [r.sample_id for r, _ in listed],
                "frame_indices": [r.frame_index for r, _ in listed],
                "timestamps_s": [r.timestamp_s for r, _ in listed],
            }
        )
        for tid in sorted({tid for _, f in listed for tid in frames[f].labels}):
            per_frame = [frames[f].labels.get(tid) for _, f in listed]
            name = tracks[tid].class_name if manifest.classes is not None else "object"
            annotations.append(
                {
                    "id": tid,
                    "track_id": tid,
                    "video_id": video_id,
                    "category_id": category_of[name or ""],
                    "iscrowd": 0,
                    "width": width,
                    "height": height,
                    **{k: [x[v] if x else None for x in per_frame] for k, v in _PER_FRAME.items()},
                }
            )
    return videos, annotations


def _labelled_frames(src: ExportSource, images: str | Path | None, json_dir: Path) -> dict[str, _Frame]:
    """The ok frames of sequences as the review leaves them, by sample id, with their tracked objects."""
    names = ("instance_ids", "left") if images is not None else ("instance_ids",)
    out: dict[str, _Frame] = {}
    for s in src.samples(names):
        rec = s.record
        if rec.sequence is None:
            continue
        file_name = rec.source.left_path if rec.source is not None else f"{rec.sample_id}.png"
        if images is not None:
            file_name = write_left_png(s.arrays["left"], rec, Path(images), json_dir)
        ids = s.arrays["instance_ids"]
        labels = {o.track_id: _label(o, ids == o.id) for o in s.objects if o.track_id is not None}
        out[rec.sample_id] = _Frame(file_name, labels)
    return out


def _label(obj: ObjectRow, mask: Any) -> _Label:
    from labeler.segment.rle import encode

    rle = encode(mask)
    return {
        "segmentation": {"size": list(rle.size), "counts": rle.counts},
        "bbox": [float(v) for v in obj.bbox],
        "area": float(obj.area_px),
        "depth_m": obj.depth_m_median,
    }


def _videos(src: ExportSource, frames: dict[str, _Frame]) -> dict[str, list[tuple[SampleRecord, str]]]:
    """Each sequence's listed frames in frame order: (the frame's record, the labelled frame whose labels it
    carries — itself, or for a skipped still frame the frame it repeats)."""
    out: dict[str, list[tuple[SampleRecord, str]]] = {}
    for shard in src.ds.iter_shards():
        for rec in shard.samples:
            if rec.sequence is None or (src.only is not None and rec.sample_id not in src.only):
                continue
            labels_of = rec.duplicate_of if rec.status == "skipped" else rec.sample_id
            if labels_of is not None and labels_of in frames:
                out.setdefault(rec.sequence, []).append((rec, labels_of))
    for listed in out.values():
        listed.sort(key=lambda x: (x[0].frame_index or 0, x[0].row))
    return out
