"""`labeler export lerobot DATASET --out lerobot/lab`: a LeRobot dataset, format v3.0, depth lossless.

Layout (LeRobot's `LeRobotDataset` v3.0: many episodes per Parquet file, metadata in Parquet):

```
OUT/meta/info.json                              codebase_version "v3.0", fps, features, path templates
OUT/meta/tasks.parquet                          one task ("pseudo-labelled stereo frame"), task_index 0
OUT/meta/episodes/chunk-000/file-000.parquet    one row per episode: index range, length, tasks
OUT/meta/stats.json                             min / max / mean / std of depth over valid pixels
OUT/data/chunk-000/file-000.parquet             one row per frame
OUT/meta/labeler.json                           dataset version, selection, the models' licences
```

Frames are the ok samples the review kept (of the selection if one is named), in row order. Until the
capture sequence of a frame is recorded in the dataset, every sample is an episode of one frame.

Frame columns (`features` in info.json): `observation.images.left` (image: PNG bytes, 8-bit RGB),
`observation.depth` (depth, lossless, never a lossy codec: `--depth-format png16` a 16-bit grey PNG of
millimetres, 0 = invalid, so within 0.5 mm of the dataset's depth up to 65.534 m, deeper is invalid; or
`float32`: the (H, W) metres bit for bit, NaN invalid, as a flat list), `observation.instance_ids` (16-bit
grey PNG, 0 = no object), `labeler.objects` (the objects as JSON), `labeler.sample_id`, and LeRobot's
`timestamp`, `frame_index`, `episode_index`, `index`, `task_index`. The depth feature's `info` names
`depth_unit` ("mm" or "m"), its scale to metres and the invalid value.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labeler.export.coco import ExportScope, open_export

CODEBASE_VERSION = "v3.0"
TASK = "pseudo-labelled stereo frame"
DepthFormat = Literal["png16", "float32"]
MM_MAX = 65534  # 65535 mm would be the largest; kept free so a clipped value is never mistaken for depth
_ARRAYS = ("left", "depth_m", "instance_ids")


def depth_png16_mm(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres, NaN invalid -> (H, W) uint16 millimetres, 0 invalid (and beyond 65.534 m)."""
    mm = np.rint(np.nan_to_num(depth_m, nan=0.0).astype(np.float64) * 1000.0)
    out = np.where((mm >= 1) & (mm <= MM_MAX), mm, 0)
    return out.astype(np.uint16)


def depth_from_png16_mm(mm: np.ndarray) -> np.ndarray:
    """The inverse: (H, W) uint16 mm -> float32 metres, NaN where 0."""
    out = mm.astype(np.float32) / np.float32(1000.0)
    out[mm == 0] = np.nan
    return out


def _features(width: int, height: int, depth_format: DepthFormat) -> dict[str, Any]:
    depth_info = (
        {"depth_unit": "mm", "scale_to_m": 0.001, "invalid": 0, "codec": "png16 (lossless)"}
        if depth_format == "png16"
        else {"depth_unit": "m", "scale_to_m": 1.0, "invalid": "NaN", "codec": "none (float32)"}
    )
    scalar = {"shape": [1], "names": None}
    return {
        "observation.images.left": {
            "dtype": "image",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.depth": {
            "dtype": "image" if depth_format == "png16" else "float32",
            "shape": [height, width, 1] if depth_format == "png16" else [height, width],
            "names": ["height", "width", "channels"] if depth_format == "png16" else ["height", "width"],
            "info": depth_info,
        },
        "observation.instance_ids": {
            "dtype": "image",
            "shape": [height, width, 1],
            "names": ["height", "width", "channels"],
            "info": {"bit_depth": 16, "background": 0},
        },
        "labeler.objects": {"dtype": "string", **scalar},
        "labeler.sample_id": {"dtype": "string", **scalar},
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


def _image(data: bytes) -> dict[str, Any]:
    return {"bytes": data, "path": None}


def export_lerobot(
    dataset_path: str | Path,
    out_dir: str | Path,
    *,
    depth_format: DepthFormat = "png16",
    fps: int = 10,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the LeRobot v3.0 folder (built beside it, then moved into place); returns out_dir. An
    `out_dir` that exists is replaced only when it is an earlier LeRobot export of this project and
    `overwrite` (labeler/export/out_guard.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from labeler.export.out_guard import check_export_out, lerobot_ours
    from labeler.export.webdataset import sample_files
    from labeler.io import encode_png, out_folder

    check_export_out(
        Path(out_dir), dataset=Path(dataset_path), kind="LeRobot", ours=lerobot_ours, overwrite=overwrite
    )
    scope = scope or ExportScope()
    src = open_export(dataset_path, scope, what="LeRobot export")
    width, height = src.ds.manifest.calibration.image_size
    rows: dict[str, list[Any]] = {k: [] for k in _features(width, height, depth_format)}
    valid: list[np.ndarray] = []
    for i, s in enumerate(src.samples(_ARRAYS)):
        files = sample_files(s)
        depth = s.arrays["depth_m"]
        rows["observation.images.left"].append(_image(files["left.png"]))
        rows["observation.depth"].append(
            _image(encode_png(depth_png16_mm(depth)))
            if depth_format == "png16"
            else np.ascontiguousarray(depth, dtype=np.float32).ravel()
        )
        rows["observation.instance_ids"].append(_image(files["instance_ids.png"]))
        rows["labeler.objects"].append(files["objects.json"].decode())
        rows["labeler.sample_id"].append(s.record.sample_id)
        for name, value in (("timestamp", 0.0), ("frame_index", 0), ("episode_index", i), ("index", i)):
            rows[name].append(value)
        rows["task_index"].append(0)
        valid.append(depth[np.isfinite(depth)][::97])  # a strided sample of valid depth for stats.json
    n = len(rows["index"])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    types = {
        "observation.images.left": image,
        "observation.depth": image if depth_format == "png16" else pa.list_(pa.float32(), height * width),
        "observation.instance_ids": image,
        "labeler.objects": pa.string(),
        "labeler.sample_id": pa.string(),
        "timestamp": pa.float32(),
        **{k: pa.int64() for k in ("frame_index", "episode_index", "index", "task_index")},
    }
    data = pa.table({k: pa.array(v, type=types[k]) for k, v in rows.items()})
    episodes = pa.table(
        {
            "episode_index": pa.array(range(n), pa.int64()),
            "tasks": pa.array([[TASK]] * n, pa.list_(pa.string())),
            "length": pa.array([1] * n, pa.int64()),
            "data/chunk_index": pa.array([0] * n, pa.int64()),
            "data/file_index": pa.array([0] * n, pa.int64()),
            "dataset_from_index": pa.array(range(n), pa.int64()),
            "dataset_to_index": pa.array(range(1, n + 1), pa.int64()),
            "meta/episodes/chunk_index": pa.array([0] * n, pa.int64()),
            "meta/episodes/file_index": pa.array([0] * n, pa.int64()),
        }
    )
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "stereo_camera",
        "total_episodes": n,
        "total_frames": n,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{n}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": _features(width, height, depth_format),
    }
    d = np.concatenate(valid) if valid else np.zeros(0, np.float32)
    stats = {
        "observation.depth": (
            {
                "min": [float(d.min())],
                "max": [float(d.max())],
                "mean": [float(d.mean())],
                "std": [float(d.std())],
            }
            if d.size
            else {}
        )
    }
    m = src.ds.manifest
    labeler_meta = {
        "dataset_version": m.dataset_version,
        "labeler_version": m.labeler_version,
        "selection": scope.selection,
        "depth_format": depth_format,
        "model_licences": src.licence_json(),
    }
    out = Path(out_dir)
    out_folder(out.parent)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        root = Path(tmp) / "out"
        for rel, table in (
            ("data/chunk-000/file-000.parquet", data),
            ("meta/episodes/chunk-000/file-000.parquet", episodes),
            ("meta/tasks.parquet", pa.table({"task_index": pa.array([0], pa.int64()), "task": [TASK]})),
        ):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, root / rel)
        for rel, obj in (
            ("meta/info.json", info),
            ("meta/stats.json", stats),
            ("meta/labeler.json", labeler_meta),
        ):
            (root / rel).write_text(json.dumps(obj, indent=1))
        if out.exists():  # checked above: empty, or an earlier LeRobot export with --overwrite
            shutil.rmtree(out)
        root.rename(out)
    return out
