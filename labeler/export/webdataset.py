"""`labeler export webdataset DATASET --out wds/`: tar shards for streaming training (the `webdataset` package
reads them: `wds.WebDataset("wds/shard-{000000..000003}.tar")`).

Each tar holds `--samples-per-tar` samples (the ok samples the review kept, in row order, of the selection
if one is named); a sample's files share its key (the dataset row, 9 digits):

| file                   | content                                                                 |
|------------------------|-------------------------------------------------------------------------|
| `KEY.left.png`         | the rectified left image, 8-bit RGB                                     |
| `KEY.depth_m.npy`      | (H, W) float32 metres, NaN invalid: the dataset's depth bit for bit     |
| `KEY.instance_ids.png` | (H, W) 16-bit grey PNG, 0 = no object (rejected objects already 0)      |
| `KEY.objects.json`     | sample_id, review, doubt, and per object id, bbox, area, depth stats... |

`OUT/info.json` names the shards, the dataset version and the licence of every model in the labels'
history. Tars are written atomically and are the same byte for byte for the same dataset (fixed times and
owners); the shards an earlier export into OUT listed in its info.json and this one does not write are
removed.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from labeler.export.coco import ExportSample, ExportScope, open_export

WDS_ARRAYS = ("left", "depth_m", "instance_ids")


def sample_files(s: ExportSample) -> dict[str, bytes]:
    """The files of one sample, by extension (without the key)."""
    from labeler.io import encode_png

    depth = io.BytesIO()
    np.save(depth, np.ascontiguousarray(s.arrays["depth_m"], dtype=np.float32))
    objects = {
        "sample_id": s.record.sample_id,
        "row": s.record.row,
        "review": s.review,
        "doubt": s.doubt,
        "objects": [
            {
                **o.model_dump(mode="json", exclude={"sample_id", "row"}),
                "review": s.object_reviews.get(o.id),
                "doubt": s.object_doubt[o.id],
            }
            for o in s.objects
        ],
    }
    return {
        "left.png": encode_png(s.arrays["left"]),
        "depth_m.npy": depth.getvalue(),
        "instance_ids.png": encode_png(s.arrays["instance_ids"]),
        "objects.json": json.dumps(objects, sort_keys=True).encode(),
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _drop_old_shards(out: Path, keep: set[str]) -> None:
    """Shards an earlier, longer export listed in its info.json (only those: nothing else is deleted),
    which a shard pattern would otherwise read as part of this one."""
    try:
        old = json.loads((out / "info.json").read_text())
        names = [s["file"] for s in old["shards"]] if old.get("format") == "webdataset" else []
    except (OSError, ValueError, KeyError, TypeError):
        return
    for name in names:
        if isinstance(name, str) and name.startswith("shard-") and "/" not in name and name not in keep:
            (out / name).unlink(missing_ok=True)


def export_webdataset(
    dataset_path: str | Path,
    out_dir: str | Path,
    *,
    samples_per_tar: int = 256,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the tar shards and `info.json`; returns out_dir. `out_dir` that exists is written over only
    when it is an earlier WebDataset export and `overwrite` (labeler/export/out_guard.py)."""
    from labeler.export.out_guard import check_export_out, webdataset_ours
    from labeler.io import atomic_path, out_folder, write_text_atomic

    if samples_per_tar < 1:
        raise ValueError(f"samples_per_tar must be at least 1, got {samples_per_tar}")
    out = Path(out_dir)
    check_export_out(
        out, dataset=Path(dataset_path), kind="WebDataset", ours=webdataset_ours, overwrite=overwrite
    )
    scope = scope or ExportScope()
    src = open_export(dataset_path, scope, what="WebDataset export")
    out_folder(out)
    shards: list[dict[str, Any]] = []
    batch: list[ExportSample] = []

    def flush() -> None:
        name = f"shard-{len(shards):06d}.tar"
        with atomic_path(out / name) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for s in batch:
                key = f"{s.record.row:09d}"
                for ext, data in sample_files(s).items():
                    _add(tar, f"{key}.{ext}", data)
        shards.append({"file": name, "n_samples": len(batch)})
        batch.clear()

    for s in src.samples(WDS_ARRAYS):
        batch.append(s)
        if len(batch) == samples_per_tar:
            flush()
    if batch:
        flush()
    _drop_old_shards(out, {s["file"] for s in shards})
    m = src.ds.manifest
    info = {
        "format": "webdataset",
        "dataset_version": m.dataset_version,
        "labeler_version": m.labeler_version,
        "selection": scope.selection,
        "samples_per_tar": samples_per_tar,
        "n_samples": sum(s["n_samples"] for s in shards),
        "shards": shards,
        "files": {
            "left.png": "rectified left image, 8-bit RGB",
            "depth_m.npy": "float32 (H, W) metres, NaN invalid",
            "instance_ids.png": "16-bit grey PNG, 0 = no object",
            "objects.json": "sample_id, review, doubt, objects",
        },
        "model_licences": src.licence_json(),
    }
    write_text_atomic(out / "info.json", json.dumps(info, indent=1))
    return out
