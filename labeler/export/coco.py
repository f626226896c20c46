"""Dataset exports: COCO instances JSON (class-agnostic, RLE masks, per-object depth attributes), and the
shared walk over the samples that every export honours review decisions through (`reviewed_samples`;
the Rerun and Hugging Face exports are labeler/export/rerun.py and labeler/export/hf.py).

Review decisions (labeler/review): a sample a review rejected is left out, and so is a rejected object
(its pixels are no object in the exported masks); `include_rejected` keeps both. Exported records carry
the decision in force (`review`: accept | reject | flag, or null).

`export_coco(dataset, out)` writes one COCO "instances" file that pycocotools' `COCO()` loads:

- `images`: one per ok sample, `id` = dataset row + 1, `width` / `height`, `file_name` = the rectified
  left image the labels were made on (as recorded in the manifest, or the PNG written under `images`),
  plus `sample_id` and, for a frame of a video or timestamped folder, its `sequence`, `frame_index` and
  `timestamp_s` (null for a still pair);
- `categories`: one per class of a class-naming backend (sam3 `--classes`), ids 1.. in that order, each
  annotation in its object's class; class-agnostic datasets keep one category, id 1, "object";
- `annotations`: one per object, `segmentation` a COCO RLE with a compressed `counts` string (the pixels
  of `instance_ids == instance_id`, so masks never overlap), `bbox` [x, y, w, h] and `area` in px,
  `iscrowd` 0, `score`, and the depth attributes `depth_m_median`, `depth_m_p10`, `depth_m_p90`
  (metres, null without valid depth) and `valid_fraction`, plus `stability` (SAM backends, else null)
  and `instance_id`, and `track_id` (`--track`: the object's track over its sequence, the tracks table;
  null when untracked);
- `info`: the dataset version, labeler version, the stereo / mask backend settings and `model_licences`
  (the licence of every model in the labels' history, data_schema/licences.py).

- each image and annotation also has `review` (the decision in force, or null) and annotations `doubt`.

It reads the tables shard by shard and each sample's `instance_ids` once (masks are stored there, not
as RLE). Works for every mask backend. The file is written atomically and is the same byte for byte
for the same dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.licences import ModelLicence, StrictLicence
from data_schema.manifest import Manifest, ObjectRow, SampleRecord
from data_schema.review import Decision
from labeler.dataset.reader import Dataset
from labeler.io import safe_name

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}
COCO_DESCRIPTION = "labeler pseudo-labels: class-agnostic instance masks with metric depth per object"


@dataclass(frozen=True)
class ExportSample:
    """One sample as an export sees it: the rejected objects already gone (unless included)."""

    record: SampleRecord
    objects: list[ObjectRow]
    arrays: dict[str, np.ndarray]  # the names asked for; instance_ids without rejected objects
    review: Decision | None  # the sample's decision in force
    object_reviews: dict[int, Decision]  # object id -> decision in force
    doubt: float | None  # the sample's combined doubt score
    object_doubt: dict[int, float | None]


@dataclass(frozen=True)
class ExportScope:
    """What every export takes from the command line: rejected samples kept or not, a named selection
    (`labeler curate`), and `--strict-licence` (refuse a dataset with a model not known to allow it)."""

    include_rejected: bool = False
    selection: str | None = None
    strict_licence: StrictLicence | None = None


@dataclass(frozen=True)
class ExportSource:
    """An opened dataset as an export sees it: the selection's ids and every model's licence."""

    ds: Dataset
    scope: ExportScope
    only: frozenset[str] | None
    licences: list[ModelLicence]

    def samples(self, names: Sequence[str]) -> Iterator[ExportSample]:
        return reviewed_samples(self.ds, names, include_rejected=self.scope.include_rejected, only=self.only)

    def licence_json(self) -> list[dict[str, Any]]:
        return [m.model_dump(mode="json") for m in self.licences]


def open_export(dataset: str | Path, scope: ExportScope, *, what: str) -> ExportSource:
    """Open a dataset for an export; one line when `--strict-licence` refuses or the selection is unknown."""
    from labeler.dataset.licences import dataset_licences, refuse
    from labeler.dataset.reader import open_dataset
    from labeler.dataset.selections import read_selection

    ds = open_dataset(dataset)
    licences = dataset_licences(ds.path, ds.manifest)
    refuse(f"{what} of {ds.path}", licences, scope.strict_licence)
    only = None
    if scope.selection is not None:
        only = frozenset(read_selection(ds.path, scope.selection).sample_ids)
    return ExportSource(ds, scope, only, licences)


def reviewed_samples(
    ds: Dataset,
    names: Sequence[str],
    *,
    include_rejected: bool = False,
    only: frozenset[str] | None = None,
) -> Iterator[ExportSample]:
    """The ok samples in row order, shard by shard, as the review decisions leave them (`only`: just
    these sample ids, e.g. a selection's)."""
    import pyarrow as pa

    from labeler.dataset.decisions import load_decisions
    from labeler.dataset.tables import objects_table, samples_table
    from labeler.doubt import TRACK_JUMP, object_doubt, sample_doubt

    decisions = load_decisions(ds)
    width, height = ds.manifest.calibration.image_size
    need = tuple(dict.fromkeys([*names, "instance_ids"]))
    jumps = _track_jumps(ds)
    for shard in ds.iter_shards():
        o_table = objects_table(shard.objects)
        if jumps:  # a track's other frames may sit in other shards: its jumps come from the whole table
            column = [jumps.get((o.row, o.id)) for o in shard.objects]
            o_table = o_table.append_column(TRACK_JUMP, pa.array(column, pa.float64()))
        s_doubt = sample_doubt(samples_table(shard.samples), o_table, width * height)
        o_doubt = object_doubt(o_table, width * height)
        by_row = {r.row: _finite(v) for r, v in zip(shard.samples, s_doubt, strict=True)}
        by_obj = {(o.row, o.id): _finite(v) for o, v in zip(shard.objects, o_doubt, strict=True)}
        for rec in shard.ok:
            if only is not None and rec.sample_id not in only:
                continue
            review = decisions.of(rec.sample_id)
            if review == "reject" and not include_rejected:
                continue
            objects = shard.objects_of(rec.row)
            reviews = {o.id: d for o in objects if (d := decisions.of(rec.sample_id, o.id)) is not None}
            arrays = ds.read_row(rec.row, need)
            dropped = [o.id for o in objects if reviews.get(o.id) == "reject"] if not include_rejected else []
            if dropped:
                ids = arrays["instance_ids"].copy()
                ids[np.isin(ids, dropped)] = 0
                arrays = {**arrays, "instance_ids": ids}
                objects = [o for o in objects if o.id not in dropped]
            yield ExportSample(
                rec,
                objects,
                arrays,
                review,
                reviews,
                by_row[rec.row],
                {o.id: by_obj[(o.row, o.id)] for o in objects},
            )


def _track_jumps(ds: Dataset) -> dict[tuple[int, int], float]:
    """{(row, object id): its track depth jump (labeler.doubt.TRACK_JUMP)} over the whole dataset, from
    four columns of the tables (empty for a dataset without tracks)."""
    from labeler.doubt import TRACK_JUMP, with_track_jumps

    if ds.manifest.tracks is None:
        return {}
    samples = ds.samples.to_table(columns=["row", "timestamp_s"])
    objects = with_track_jumps(
        samples, ds.objects.to_table(columns=["row", "id", "track_id", "depth_m_median"])
    )
    rows, ids = objects.column("row").to_pylist(), objects.column("id").to_pylist()
    return {
        (r, i): j
        for r, i, j in zip(rows, ids, objects.column(TRACK_JUMP).to_pylist(), strict=True)
        if j is not None
    }


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def export_coco(
    dataset_path: str | Path,
    out_path: str | Path,
    *,
    images: str | Path | None = None,
    include_rejected: bool = False,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the COCO instances JSON of a dataset.

    Args:
        dataset_path: a dataset folder written by `labeler pseudo-label` / `labeler run`.
        out_path: the JSON file to write (parent folders are created).
        images: if given, also write each sample's rectified left image there as `<sample_id>.png`;
            `file_name` is then that PNG's path relative to the JSON's folder.
        include_rejected: keep the samples and objects a review rejected.
        scope: the selection, `--strict-licence` and include_rejected together (overrides the flag above).
        overwrite: replace an earlier COCO export at out_path (anything else there is refused).

    Returns:
        out_path.
    """
    from labeler.export.out_guard import check_export_out, coco_json_ours
    from labeler.io import check_out_file, write_text_atomic

    out_path = check_out_file(out_path)  # a folder, or under a file: one line before the work
    check_export_out(
        out_path, dataset=Path(dataset_path), kind="COCO", ours=coco_json_ours, overwrite=overwrite
    )
    src = open_export(
        dataset_path, scope or ExportScope(include_rejected=include_rejected), what="COCO export"
    )
    ds = src.ds
    width, height = ds.manifest.calibration.image_size
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    names = ("instance_ids", "left") if images is not None else ("instance_ids",)
    for s in src.samples(names):
        rec, arrays = s.record, s.arrays
        file_name = rec.source.left_path if rec.source is not None else f"{rec.sample_id}.png"
        if images is not None:
            file_name = write_left_png(arrays["left"], rec, Path(images), out_path.parent)
        image_id = rec.row + 1
        coco_images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": width,
                "height": height,
                "sample_id": rec.sample_id,
                "sequence": rec.sequence,
                "frame_index": rec.frame_index,
                "timestamp_s": rec.timestamp_s,
                "review": s.review,
                "doubt": s.doubt,
            }
        )
        category_of = {c["name"]: c["id"] for c in categories(ds.manifest)}
        for obj in s.objects:
            ann = _annotation(len(annotations) + 1, image_id, obj, arrays["instance_ids"])
            if ds.manifest.classes is not None:
                ann["category_id"] = category_of[obj.class_name or ""]
            annotations.append(
                {**ann, "review": s.object_reviews.get(obj.id), "doubt": s.object_doubt[obj.id]}
            )
    coco = {
        "info": {**dataset_info(ds.manifest), "model_licences": src.licence_json()},
        "licenses": [],
        "images": coco_images,
        "categories": categories(ds.manifest),
        "annotations": annotations,
    }
    write_text_atomic(out_path, json.dumps(coco, separators=(",", ":")))
    return out_path


def categories(manifest: Manifest) -> list[dict[str, Any]]:
    """COCO categories: one per class in the dataset's class order (ids from 1); else the single "object"."""
    if manifest.classes is None:
        return [CATEGORY]
    return [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(manifest.classes, 1)]


def _annotation(ann_id: int, image_id: int, obj: ObjectRow, instance_ids: np.ndarray) -> dict[str, Any]:
    from labeler.segment.rle import encode

    rle = encode(instance_ids == obj.id)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY["id"],
        "segmentation": {"size": list(rle.size), "counts": rle.counts},
        "area": float(obj.area_px),
        "bbox": [float(v) for v in obj.bbox],
        "iscrowd": 0,
        "score": obj.score,
        "stability": obj.stability,
        "depth_m_median": obj.depth_m_median,
        "depth_m_p10": obj.depth_m_p10,
        "depth_m_p90": obj.depth_m_p90,
        "valid_fraction": obj.valid_fraction,
        "instance_id": obj.id,
        "track_id": obj.track_id,
    }


def dataset_info(manifest: Manifest, description: str = COCO_DESCRIPTION) -> dict[str, Any]:
    """The `info` of a labeler JSON export (out_guard.py recognises an earlier one by its description)."""
    return {
        "description": description,
        "version": manifest.dataset_version,
        "labeler_version": manifest.labeler_version,
        "stereo": manifest.stereo.model_dump(mode="json"),
        "masks": manifest.masks.model_dump(mode="json"),
    }


def write_left_png(left: np.ndarray, rec: SampleRecord, folder: Path, json_dir: Path) -> str:
    """FOLDER/<sample_id>.png; returns its path relative to `json_dir` (a JSON export's `file_name`)."""
    from labeler.io import write_png

    path = folder / f"{safe_name(rec.sample_id)}.png"
    write_png(path, left)
    return Path(os.path.relpath(path.resolve(), json_dir.resolve())).as_posix()
