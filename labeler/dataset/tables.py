"""The `samples` and `objects` tables: Arrow schemas and the conversions to and from their records.

Columns are flat (nested records are spelled out, e.g. `stats.valid_depth_fraction` becomes
`valid_depth_fraction`), so pandas, polars and DuckDB query them without unpacking. The files: one Parquet
part per shard and table under `tables/<table>/` (written atomically), merged into larger files once
COMPACT_MIN_FILES have piled up; the shard index says which file and row group holds each shard's rows.

A shard's rows hash to the same sha256 whatever Parquet file holds them (`rows_sha256`): the hash is over
canonical JSON of the records, so compaction into larger files never changes the dataset version. Each
reference also records the sha256 of the whole file it names (`file_sha256`, written by whoever writes the
file: the shard's task, compaction, a rewrite), so a changed byte that still decodes to the same rows is
named too; `changed_table_files` hashes every file once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from data_schema.manifest import (
    ARRAY_NAMES,
    ArrayDigests,
    ObjectRow,
    SampleRecord,
    SampleStats,
    ShardEntry,
    SourceFiles,
    TableRef,
    TrackRow,
)
from labeler.errors import LabelerError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

TABLES_DIR = "tables"
# Small per-shard table files are merged once this many have piled up (10^6 samples: ~500 files).
COMPACT_MIN_FILES = 64
Table = Literal["samples", "objects"]
TABLES: tuple[Table, Table] = ("samples", "objects")

_SOURCE = ("left_path", "right_path", "left_sha256", "right_sha256")
# Doubt signals (labeler/doubt.py), nullable: tables written before them read back as None.
_SAMPLE_DOUBT = ("mono_disagreement", "temporal_instability")
# Sequences (schema 3), nullable: tables written before them read back as None, and a None is left out of
# the content hash, so a dataset of lone captures keeps its version.
_SEQUENCE = ("sequence", "frame_index", "timestamp_s", "duplicate_of")
_OBJECT_TRACK = ("track_id",)
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
            ("sequence", pa.string()),
            ("frame_index", pa.int64()),
            ("timestamp_s", pa.float64()),
            ("duplicate_of", pa.string()),
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
            ("track_id", pa.int64()),
        ]
    )


def tracks_schema() -> pa.Schema:
    """One column per TrackRow field (integers, floats and strings; all but the ids nullable)."""
    import pyarrow as pa

    text = ("class_name", "sequence")
    whole = ("track_id", "first_frame", "last_frame", "frames_seen", "nearest_frame")
    return pa.schema(
        [
            (name, pa.string() if name in text else pa.int64() if name in whole else pa.float64())
            for name in TrackRow.model_fields
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
        **{name: getattr(rec, name) for name in _SEQUENCE},
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
        **{name: row.get(name) for name in _SEQUENCE},
    )


def object_row(obj: ObjectRow) -> dict[str, Any]:
    return obj.model_dump()


def object_from_row(row: dict[str, Any]) -> ObjectRow:
    return ObjectRow(**{k: v for k, v in row.items() if k not in _OBJECT_TRACK or v is not None})


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
# Labels added by later schemas: hashed when set, left out when None (rows written before hash as they did).
OPTIONAL_FIELDS = frozenset(_SEQUENCE + _OBJECT_TRACK)


def rows_sha256(
    records: Sequence[SampleRecord] | Sequence[ObjectRow] | Sequence[TrackRow], *, content_only: bool = False
) -> str:
    """sha256 of canonical JSON lines of the records: the same for the same rows in any file.
    `content_only` leaves out the provenance fields (timings, device) and the doubt signals — the
    dataset version's hash. Doubt fields that are None are left out too, so rows written before those
    fields existed hash as they did."""
    h = hashlib.sha256()
    base = set(PROVENANCE_FIELDS | DOUBT_FIELDS) if content_only else set()
    for rec in records:
        exclude = base | {f for f in DOUBT_FIELDS | OPTIONAL_FIELDS if getattr(rec, f, 0) is None}
        h.update(json.dumps(rec.model_dump(mode="json", exclude=exclude), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def content_sha256(samples: Sequence[SampleRecord], objects: Sequence[ObjectRow]) -> str:
    """A shard's labels (ids, status, sources, digests, stats, objects) without provenance."""
    return hashlib.sha256(
        (rows_sha256(samples, content_only=True) + rows_sha256(objects, content_only=True)).encode()
    ).hexdigest()


def table_dir(dataset: str | Path, table: Table) -> Path:
    return Path(dataset) / TABLES_DIR / table


def part_name(shard: int) -> str:
    return f"s-{shard:06d}.parquet"


def _write_parquet_atomic(path: Path, tables: Sequence[pa.Table]) -> None:
    """One row group per table given; temp file + rename, so a reader never sees half a file."""
    import pyarrow.parquet as pq

    from labeler.io import atomic_path

    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, tables[0].schema, compression="zstd") as writer:
            for t in tables:
                writer.write_table(t, row_group_size=max(1, t.num_rows))


def write_shard_tables(
    dataset: str | Path, shard: int, samples: Sequence[SampleRecord], objects: Sequence[ObjectRow]
) -> tuple[TableRef, TableRef]:
    """The shard writer's two table part files (one row group each); returns where its rows are."""
    from labeler.dataset.tables import objects_table, rows_sha256, samples_table
    from labeler.io import sha256_file

    refs = []
    for table, rows, build in (("samples", samples, samples_table), ("objects", objects, objects_table)):
        path = table_dir(dataset, table) / part_name(shard)  # type: ignore[arg-type]
        _write_parquet_atomic(path, [build(rows)])  # type: ignore[arg-type]
        refs.append(
            TableRef(
                file=path.name,
                row_group=0,
                n_rows=len(rows),
                sha256=rows_sha256(rows),
                file_sha256=sha256_file(path),
            )
        )
    return refs[0], refs[1]


def read_table(dataset: str | Path, table: Table, ref: TableRef) -> pa.Table:
    """One shard's rows of a table (one row group: the cost follows the shard, not the file)."""
    import pyarrow.parquet as pq

    path = table_dir(dataset, table) / ref.file
    with pq.ParquetFile(path) as f:
        return f.read_row_group(ref.row_group)


def shard_samples(dataset: str | Path, entry: ShardEntry) -> list[SampleRecord]:
    from labeler.dataset.tables import sample_from_row

    return [sample_from_row(r) for r in read_table(dataset, "samples", entry.samples).to_pylist()]


def shard_objects(dataset: str | Path, entry: ShardEntry) -> list[ObjectRow]:
    from labeler.dataset.tables import object_from_row

    return [object_from_row(r) for r in read_table(dataset, "objects", entry.objects).to_pylist()]


def table_dataset(dataset: str | Path, table: Table, entries: Sequence[ShardEntry]) -> pads.Dataset:
    """A lazy pyarrow Dataset over exactly the row groups the shard index names (nothing stale)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    from labeler.dataset.tables import objects_schema, samples_schema

    fmt = pads.ParquetFileFormat()
    fs = pafs.LocalFileSystem()
    groups: dict[str, list[int]] = {}
    for e in entries:
        ref = e.samples if table == "samples" else e.objects
        groups.setdefault(ref.file, []).append(ref.row_group)
    base = table_dir(dataset, table)
    fragments = [
        fmt.make_fragment(str(base.resolve() / name), filesystem=fs, row_groups=sorted(rgs))
        for name, rgs in sorted(groups.items())
    ]
    schema = samples_schema() if table == "samples" else objects_schema()
    return pads.FileSystemDataset(fragments, schema, fmt, filesystem=fs)


def compact_tables(dataset: str | Path, entries: dict[int, ShardEntry]) -> list[ShardEntry]:
    """Merge small per-shard part files into one file per table (a row group per shard), atomically.

    Returns the shards' new entries, to append to the shard index; the caller deletes the old files
    only after that (`remove_unreferenced_tables`), so a kill at any point loses nothing.
    """
    small = sorted(s for s, e in entries.items() if e.samples.file.startswith("s-"))
    if len(small) < COMPACT_MIN_FILES:
        return []
    import pyarrow.parquet as pq

    from labeler.io import sha256_file

    new_refs: dict[Table, dict[int, TableRef]] = {}
    for table in TABLES:
        name = f"c-{small[0]:06d}-{small[-1]:06d}-{len(small)}.parquet"
        parts = [read_table(dataset, table, _ref(entries[s], table)) for s in small]
        path = table_dir(dataset, table) / name
        _write_parquet_atomic(path, parts)
        with pq.ParquetFile(path) as f:  # the merged file must hold what it replaces
            if f.metadata.num_row_groups != len(small):
                raise LabelerError(f"{path}: compaction wrote {f.metadata.num_row_groups} row groups")
        digest = sha256_file(path)  # once per merged file, not per shard
        new_refs[table] = {
            s: _ref(entries[s], table).model_copy(
                update={"file": name, "row_group": i, "file_sha256": digest}
            )
            for i, s in enumerate(small)
        }
    return [
        entries[s].model_copy(update={"samples": new_refs["samples"][s], "objects": new_refs["objects"][s]})
        for s in small
    ]


def _ref(entry: ShardEntry, table: Table) -> TableRef:
    return entry.samples if table == "samples" else entry.objects


def changed_table_files(dataset: str | Path, entries: Iterable[ShardEntry]) -> dict[Path, list[int]]:
    """The table files whose bytes differ from the `file_sha256` their references recorded (a missing
    file included), each with the shards that name it. Every file is hashed once, whatever the number of
    shards it holds; references written before `file_sha256` are not checked."""
    from labeler.io import sha256_file

    want: dict[Path, set[str]] = {}
    shards: dict[Path, list[int]] = {}
    for e in entries:
        for table in TABLES:
            ref = _ref(e, table)
            if ref.file_sha256 is not None:
                path = table_dir(dataset, table) / ref.file
                want.setdefault(path, set()).add(ref.file_sha256)
                shards.setdefault(path, []).append(e.shard)
    changed = {}
    for path, digests in sorted(want.items()):
        try:
            found = sha256_file(path)
        except OSError:
            found = ""
        if digests != {found}:
            changed[path] = sorted(set(shards[path]))
    return changed


def table_files(entries: Iterable[ShardEntry]) -> dict[Table, set[str]]:
    """The table files the entries name, per table."""
    out: dict[Table, set[str]] = {table: set() for table in TABLES}
    for e in entries:
        out["samples"].add(e.samples.file)
        out["objects"].add(e.objects.file)
    return out


def remove_unreferenced_tables(
    dataset: str | Path, entries: dict[int, ShardEntry], superseded: dict[Table, set[str]]
) -> int:
    """Delete the superseded table files (those the caller's own writes replaced: compaction, a rewritten
    shard) that no current entry names. Only those: a file the shard index does not name is never deleted
    for that alone, since a damaged index loses track of files that hold samples."""
    removed = 0
    used = table_files(entries.values())
    for table in TABLES:
        for name in sorted(superseded.get(table, set()) - used[table]):
            path = table_dir(dataset, table) / name
            if path.is_file():
                path.unlink()
                removed += 1
    return removed


def write_table_file(dataset: str | Path, table: Table, name: str, parts: Sequence[pa.Table]) -> str:
    """A table file under tables/<table>/ with one row group per part, atomically: finished shards' rows
    rewritten (`labeler doubt`, `--track`); the caller appends the entries that name it, then removes what
    no entry names, as compaction does. Returns the file's sha256 (the references' `file_sha256`)."""
    from labeler.io import sha256_file

    path = table_dir(dataset, table) / name
    _write_parquet_atomic(path, parts)
    return sha256_file(path)


# ------------------------------------------------------------------------------------ the tracks table
TRACKS_TABLE = "tracks"


def tracks_table(rows: Sequence[TrackRow]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=tracks_schema())


def write_tracks_table(dataset: str | Path, rows: Sequence[TrackRow]) -> TableRef:
    """`tables/tracks/t-<hash>.parquet` (one row group, atomically; named by its rows, so a re-run that
    finds the same tracks writes the same file). The manifest names it; `remove_stale_tracks` drops others."""
    from labeler.io import sha256_file

    sha = rows_sha256(rows)
    name = f"t-{sha[:16]}.parquet"
    path = Path(dataset) / TABLES_DIR / TRACKS_TABLE / name
    _write_parquet_atomic(path, [tracks_table(rows)])
    return TableRef(file=name, row_group=0, n_rows=len(rows), sha256=sha, file_sha256=sha256_file(path))


def tracks_path(dataset: str | Path, ref: TableRef) -> Path:
    return Path(dataset) / TABLES_DIR / TRACKS_TABLE / ref.file


def read_tracks(dataset: str | Path, ref: TableRef) -> list[TrackRow]:
    import pyarrow.parquet as pq

    return [TrackRow(**r) for r in pq.read_table(tracks_path(dataset, ref)).to_pylist()]


def remove_stale_tracks(dataset: str | Path, ref: TableRef | None) -> int:
    """Delete tracks files other than the one the manifest names (an earlier run's)."""
    base = Path(dataset) / TABLES_DIR / TRACKS_TABLE
    removed = 0
    for path in base.glob("t-*.parquet") if base.is_dir() else []:
        if ref is None or path.name != ref.file:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
