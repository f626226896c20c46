"""Dataset exports: COCO instances JSON (class-agnostic, RLE masks, per-object depth attributes).

`export_coco(dataset, out)` writes one COCO "instances" file that pycocotools' `COCO()` loads:

- `images`: one per ok sample, `id` = dataset row + 1, `width` / `height`, `file_name` = the rectified
  left image the labels were made on (as recorded in the manifest, or the PNG written under `images`),
  plus `sample_id`;
- `categories`: one class-agnostic category, id 1, "object";
- `annotations`: one per object, `segmentation` a COCO RLE with a compressed `counts` string (the pixels
  of `instance_ids == instance_id`, so masks never overlap), `bbox` [x, y, w, h] and `area` in px,
  `iscrowd` 0, `score`, and the depth attributes `depth_m_median`, `depth_m_p10`, `depth_m_p90`
  (metres, null without valid depth) and `valid_fraction`, plus `stability` (SAM backends, else null)
  and `instance_id`;
- `info`: the dataset version, labeler version and the stereo / mask backend settings.

It reads the tables shard by shard and each sample's `instance_ids` once (masks are stored there, not
as RLE). Works for every mask backend. The file is written atomically and is the same byte for byte
for the same dataset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.manifest import Manifest, ObjectRow, SampleRecord

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def export_coco(dataset_path: str | Path, out_path: str | Path, *, images: str | Path | None = None) -> Path:
    """Write the COCO instances JSON of a dataset.

    Args:
        dataset_path: a dataset folder written by `labeler pseudo-label` / `labeler run`.
        out_path: the JSON file to write (parent folders are created).
        images: if given, also write each sample's rectified left image there as `<sample_id>.png`;
            `file_name` is then that PNG's path relative to the JSON's folder.

    Returns:
        out_path.
    """
    from labeler.dataset import open_dataset
    from labeler.io import write_text_atomic

    out_path = Path(out_path)
    ds = open_dataset(dataset_path)
    width, height = ds.manifest.calibration.image_size
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for shard in ds.iter_shards():
        for rec in shard.ok:
            file_name = rec.source.left_path if rec.source is not None else f"{rec.sample_id}.png"
            names = ("instance_ids", "left") if images is not None else ("instance_ids",)
            arrays = ds.read_row(rec.row, names)
            if images is not None:
                file_name = _write_image(arrays["left"], rec, Path(images), out_path.parent)
            image_id = rec.row + 1
            coco_images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": width,
                    "height": height,
                    "sample_id": rec.sample_id,
                }
            )
            for obj in shard.objects_of(rec.row):
                annotations.append(_annotation(len(annotations) + 1, image_id, obj, arrays["instance_ids"]))
    coco = {
        "info": _info(ds.manifest),
        "licenses": [],
        "images": coco_images,
        "categories": [CATEGORY],
        "annotations": annotations,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, json.dumps(coco, separators=(",", ":")))
    return out_path


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
    }


def _info(manifest: Manifest) -> dict[str, Any]:
    return {
        "description": "labeler pseudo-labels: class-agnostic instance masks with metric depth per object",
        "version": manifest.dataset_version,
        "labeler_version": manifest.labeler_version,
        "stereo": manifest.stereo.model_dump(mode="json"),
        "masks": manifest.masks.model_dump(mode="json"),
    }


def _write_image(left: np.ndarray, rec: SampleRecord, folder: Path, json_dir: Path) -> str:
    from labeler.io import write_png

    path = folder / f"{rec.sample_id}.png"
    write_png(path, left)
    return Path(os.path.relpath(path.resolve(), json_dir.resolve())).as_posix()
