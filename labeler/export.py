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

It reads the manifest only (objects carry their RLE); an object without one is encoded from the
store's `instance_ids`. Works for every mask backend. The file is written atomically and is the same
byte for byte for the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_schema.manifest import Manifest, ObjectRecord, SampleRecord

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
    from labeler.io import write_text_atomic
    from labeler.shards import load_manifest

    dataset_path, out_path = Path(dataset_path), Path(out_path)
    manifest = load_manifest(dataset_path)
    width, height = manifest.calibration.image_size
    store = _Store(dataset_path)
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for rec in manifest.ok:
        assert rec.index is not None  # ok samples always have a row
        file_name = rec.source.left_path if rec.source is not None else f"{rec.sample_id}.png"
        if images is not None:
            file_name = _write_image(store, rec, Path(images), out_path.parent)
        image_id = rec.index + 1
        coco_images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": width,
                "height": height,
                "sample_id": rec.sample_id,
            }
        )
        for obj in rec.objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, obj, store, rec))
    coco = {
        "info": _info(manifest),
        "licenses": [],
        "images": coco_images,
        "categories": [CATEGORY],
        "annotations": annotations,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_path, json.dumps(coco, separators=(",", ":")))
    return out_path


def _annotation(
    ann_id: int, image_id: int, obj: ObjectRecord, store: _Store, rec: SampleRecord
) -> dict[str, Any]:
    rle = obj.rle
    if rle is None:
        from labeler.segment.rle import encode

        rle = encode(store.instance_ids(rec) == obj.id)
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


class _Store:
    """Lazy reads of single arrays of single rows (only when an export needs them)."""

    def __init__(self, dataset: Path) -> None:
        self.dataset = dataset
        self._group: Any = None

    def _array(self, name: str, index: int | None):
        if index is None:
            raise ValueError("a sample without a row has no arrays")
        if self._group is None:
            import zarr

            from labeler.shards import STORE_NAME

            self._group = zarr.open_group(self.dataset / STORE_NAME, mode="r")
        return self._group[name][index]

    def instance_ids(self, rec: SampleRecord):
        return self._array("instance_ids", rec.index)

    def left(self, rec: SampleRecord):
        return self._array("left", rec.index)


def _write_image(store: _Store, rec: SampleRecord, folder: Path, json_dir: Path) -> str:
    import os

    from labeler.io import write_png

    path = folder / f"{rec.sample_id}.png"
    write_png(path, store.left(rec))
    return Path(os.path.relpath(path.resolve(), json_dir.resolve())).as_posix()
