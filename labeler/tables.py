"""The `samples` and `objects` tables: Arrow schemas and the conversions to and from their records.

Columns are flat (nested records are spelled out, e.g. `stats.valid_depth_fraction` becomes
`valid_depth_fraction`), so pandas, polars and DuckDB query them without unpacking. Where the files live
is `labeler/shards.py`'s business; this module only knows rows.

A shard's rows hash to the same sha256 whatever Parquet file holds them (`rows_sha256`): the hash is over
canonical JSON of the records, so compaction into larger files never changes the shard index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from data_schema.manifest import (
    ARRAY_NAMES,
    ArrayDigests,
    ObjectRow,
    SampleRecord,
    SampleStats,
    SourceFiles,
)

if TYPE_CHECKING:
    import pyarrow as pa

_SOURCE = ("left_path", "right_path", "left_sha256", "right_sha256")
# Doubt signals (labeler/doubt.py), nullable: tables written before them read back as None.
_SAMPLE_DOUBT = ("mono_disagreement", "temporal_instability")
_OBJECT_DOUBT = ("thickness_px", "edge_alignment", "mono_disagreement")
_STATS = (
    "valid_depth_fraction",
    "confidence_mean",
    "depth_m_min",
    "depth_m_max",
    "n_objects",
    "n_objects_dropped",
)


def samples_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("row", pa.int64()),
            ("status", pa.string()),
            ("error", pa.string()),
            *[(name, pa.string()) for name in _SOURCE],
            *[(f"digest_{name}", pa.string()) for name in ARRAY_NAMES],
            ("valid_depth_fraction", pa.float64()),
            ("confidence_mean", pa.float64()),
            ("depth_m_min", pa.float64()),
            ("depth_m_max", pa.float64()),
            ("n_objects", pa.int64()),
            ("n_objects_dropped", pa.int64()),
            ("seconds", pa.float64()),
            ("device", pa.string()),
            ("stereo_scale", pa.float64()),
            ("stereo_iters", pa.int64()),
            ("stereo_dtype", pa.string()),
            *[(name, pa.float64()) for name in _SAMPLE_DOUBT],
        ]
    )


def objects_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("row", pa.int64()),
            ("id", pa.int64()),
            ("area_px", pa.int64()),
            ("bbox", pa.list_(pa.int64(), 4)),
            ("score", pa.float64()),
            ("stability", pa.float64()),
            ("valid_fraction", pa.float64()),
            ("depth_m_median", pa.float64()),
            ("depth_m_p10", pa.float64()),
            ("depth_m_p90", pa.float64()),
            ("class_name", pa.string()),
            *[(name, pa.float64()) for name in _OBJECT_DOUBT],
        ]
    )


def sample_row(rec: SampleRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sample_id": rec.sample_id,
        "row": rec.row,
        "status": rec.status,
        "error": rec.error,
        "seconds": rec.seconds,
        "device": rec.device,
        "stereo_scale": rec.stereo_scale,
        "stereo_iters": rec.stereo_iters,
        "stereo_dtype": rec.stereo_dtype,
        **{name: getattr(rec, name) for name in _SAMPLE_DOUBT},
    }
    for name in _SOURCE:
        out[name] = getattr(rec.source, name) if rec.source else None
    for name in ARRAY_NAMES:
        out[f"digest_{name}"] = getattr(rec.digests, name) if rec.digests else None
    for name in _STATS:
        out[name] = getattr(rec.stats, name) if rec.stats else None
    return out


def sample_from_row(row: dict[str, Any]) -> SampleRecord:
    has_source = row["left_path"] is not None
    has_digests = row["digest_left"] is not None
    has_stats = row["valid_depth_fraction"] is not None
    return SampleRecord(
        sample_id=row["sample_id"],
        row=row["row"],
        status=row["status"],
        error=row["error"],
        source=SourceFiles(**{n: row[n] for n in _SOURCE}) if has_source else None,
        digests=ArrayDigests(**{n: row[f"digest_{n}"] for n in ARRAY_NAMES}) if has_digests else None,
        stats=SampleStats(**{n: row[n] for n in _STATS if row.get(n) is not None}) if has_stats else None,
        seconds=row["seconds"],
        device=row["device"],
        stereo_scale=row.get("stereo_scale"),
        stereo_iters=row.get("stereo_iters"),
        stereo_dtype=row.get("stereo_dtype"),
        **{name: row.get(name) for name in _SAMPLE_DOUBT},
    )


def object_row(obj: ObjectRow) -> dict[str, Any]:
    return obj.model_dump()


def object_from_row(row: dict[str, Any]) -> ObjectRow:
    return ObjectRow(**row)


def samples_table(records: Sequence[SampleRecord]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist([sample_row(r) for r in records], schema=samples_schema())


def objects_table(rows: Sequence[ObjectRow]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist([object_row(r) for r in rows], schema=objects_schema())


# Provenance of a run, not content: two runs that make the same labels make the same dataset version.
PROVENANCE_FIELDS = frozenset({"seconds", "device", "stereo_scale", "stereo_iters", "stereo_dtype"})
# Derived from the labels (and from a monocular model or neighbouring frames), not labels themselves:
# `labeler doubt` adding them leaves the dataset version as it is.
DOUBT_FIELDS = frozenset(_SAMPLE_DOUBT + _OBJECT_DOUBT)


def rows_sha256(records: Sequence[SampleRecord] | Sequence[ObjectRow], *, content_only: bool = False) -> str:
    """sha256 of canonical JSON lines of the records: the same for the same rows in any file.
    `content_only` leaves out the provenance fields (timings, device) and the doubt signals — the
    dataset version's hash. Doubt fields that are None are left out too, so rows written before those
    fields existed hash as they did."""
    h = hashlib.sha256()
    base = set(PROVENANCE_FIELDS | DOUBT_FIELDS) if content_only else set()
    for rec in records:
        exclude = base | {f for f in DOUBT_FIELDS if getattr(rec, f, 0) is None}
        h.update(json.dumps(rec.model_dump(mode="json", exclude=exclude), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def content_sha256(samples: Sequence[SampleRecord], objects: Sequence[ObjectRow]) -> str:
    """A shard's labels (ids, status, sources, digests, stats, objects) without provenance."""
    return hashlib.sha256(
        (rows_sha256(samples, content_only=True) + rows_sha256(objects, content_only=True)).encode()
    ).hexdigest()
