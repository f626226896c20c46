"""`labeler export hf DATASET --out hf/lab`: a Hugging Face `datasets` folder (`load_from_disk`).

One row per ok sample the review kept (labeler/export/coco.py `reviewed_samples`). Columns:

| column         | feature                         | content                                         |
|----------------|---------------------------------|-------------------------------------------------|
| `sample_id`    | string                          |                                                 |
| `left`, `right`| Image                           | the rectified pair (uint8 RGB, PNG inside)      |
| `depth_m`      | Array2D float32 (H, W)          | metres, NaN invalid                             |
| `disparity_px` | Array2D float32 (H, W)          | px, NaN invalid                                 |
| `confidence`   | Array2D float32 (H, W)          | [0, 1], NaN invalid                             |
| `instance_ids` | Array2D uint16 (H, W)           | 0 = no object; rejected objects already 0       |
| `objects`      | List of structs                 | id, area_px, bbox, score, depth stats, doubt... |
| `doubt`        | float32                         | the combined doubt score (labeler/doubt.py)     |
| `review`       | string                          | the decision in force, or null                  |

Depth is an Array2D, never an `Image`: the Image feature stores float depth as 8-bit (HF datasets #5461).
The licence of every model in the labels' history (data_schema/licences.py) is in `OUT/licences.json`
(a `LicenceRecord`) and, one model per line, in the dataset's own `info.license`; `--selection` and
`--strict-licence` work as in every export (labeler/export/coco.py `open_export`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labeler.errors import InputError, LabelerError
from labeler.export.coco import ExportScope
from labeler.export.out_guard import check_export_out, hf_ours
from labeler.io import out_folder

ARRAYS = ("left", "right", "depth_m", "disparity_px", "confidence", "instance_ids")
_OBJECT_FLOATS = (
    "score",
    "stability",
    "valid_fraction",
    "depth_m_median",
    "depth_m_p10",
    "depth_m_p90",
    "thickness_px",
    "edge_alignment",
    "mono_disagreement",
)


def features(width: int, height: int) -> Any:
    from datasets import Array2D, Features, Image, List, Value

    obj = {
        "id": Value("int32"),
        "area_px": Value("int64"),
        "bbox": List(Value("int32"), length=4),
        **{name: Value("float32") for name in _OBJECT_FLOATS},
        "doubt": Value("float32"),
        "review": Value("string"),
    }
    shape = (height, width)
    return Features(
        {
            "sample_id": Value("string"),
            "left": Image(),
            "right": Image(),
            "depth_m": Array2D(shape=shape, dtype="float32"),
            "disparity_px": Array2D(shape=shape, dtype="float32"),
            "confidence": Array2D(shape=shape, dtype="float32"),
            "instance_ids": Array2D(shape=shape, dtype="uint16"),
            "objects": List(obj),
            "doubt": Value("float32"),
            "review": Value("string"),
        }
    )


def _rows(dataset: str, include_rejected: bool, only: list[str] | None) -> Iterator[dict[str, Any]]:
    from labeler.dataset.reader import open_dataset
    from labeler.export.coco import reviewed_samples

    ds = open_dataset(dataset)
    keep = frozenset(only) if only is not None else None
    for s in reviewed_samples(ds, ARRAYS, include_rejected=include_rejected, only=keep):
        a = s.arrays
        yield {
            "sample_id": s.record.sample_id,
            **{name: a[name] for name in ARRAYS},
            "objects": [
                {
                    "id": o.id,
                    "area_px": o.area_px,
                    "bbox": o.bbox,
                    **{name: getattr(o, name) for name in _OBJECT_FLOATS},
                    "doubt": s.object_doubt[o.id],
                    "review": s.object_reviews.get(o.id),
                }
                for o in s.objects
            ],
            "doubt": s.doubt,
            "review": s.review,
        }


def export_hf(
    dataset_path: str | Path,
    out_dir: str | Path,
    *,
    include_rejected: bool = False,
    scope: ExportScope | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the `datasets` folder (built in a temporary cache beside it, then moved into place).

    scope: the selection, `--strict-licence` and include_rejected together (overrides the flag).
    `out_dir` is replaced only when it is an earlier export and `overwrite` (labeler/export/out_guard.py).
    """
    from datasets import DatasetInfo, disable_progress_bars

    from data_schema.licences import describe
    from labeler.dataset.licences import licence_record
    from labeler.export.coco import open_export

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is a file", "pass a folder to --out")
    check_export_out(
        out_dir, dataset=Path(dataset_path), kind="Hugging Face", ours=hf_ours, overwrite=overwrite
    )
    scope = scope or ExportScope(include_rejected=include_rejected)
    src = open_export(dataset_path, scope, what="Hugging Face export")
    ds = src.ds
    nothing = f"{dataset_path}: no sample to export ({len(ds)} ok, {ds.manifest.counts.failed} failed"
    if len(ds) == 0:
        raise LabelerError(f"{nothing}); fix the inputs `labeler validate` lists as failed and run again")
    width, height = ds.manifest.calibration.image_size
    out_folder(out_dir.parent)
    disable_progress_bars()
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        hf = _generate(
            features=features(width, height),
            cache_dir=str(Path(tmp) / "cache"),
            gen_kwargs={
                "dataset": str(dataset_path),
                "include_rejected": scope.include_rejected,
                "only": sorted(src.only) if src.only is not None else None,
            },
            info=DatasetInfo(
                description=f"labeler dataset {src.ds.version[:12]}"
                + (f", selection {scope.selection}" if scope.selection else ""),
                license="\n".join(describe(m) for m in src.licences),
            ),
            nothing=nothing,
        )
        staged = Path(tmp) / "out"
        hf.save_to_disk(str(staged))
        del hf
        (staged / "licences.json").write_text(licence_record(src.licences).model_dump_json(indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    return out_dir


def _generate(*, nothing: str, **kwargs: Any) -> Any:
    """`Dataset.from_generator` over the export's rows; every sample left out by review or selection is
    one line (`datasets` refuses an empty generator)."""
    from datasets import Dataset

    try:
        return Dataset.from_generator(_rows, **kwargs)
    except ValueError as err:
        if "no data" not in str(err):
            raise
        raise LabelerError(
            f"{nothing}, the rest left out by review or --selection); pass --include-rejected or another "
            "--selection"
        ) from None
