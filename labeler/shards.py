"""The only owner of a dataset's files (layout v2, see data_schema/manifest.py): the manifest, the shard
index, the Parquet tables and the Zarr v3 arrays. The reader is `labeler/dataset.py`.

Writers: the client creates or grows the arrays (metadata has one writer) and is the only writer of the
manifest and the shard index; each shard's arrays and table part files are written by exactly one task,
in one region write per array that covers the whole shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from data_schema.manifest import (
    ARRAY_NAMES,
    ArrayDigests,
    ArraySpec,
    DatasetCounts,
    Manifest,
    ObjectRow,
    SampleRecord,
    ShardEntry,
    ShardPlan,
    StoreLayout,
    TableRef,
)
from data_schema.review import DoubtPass, Review
from labeler.errors import InputError, LabelerError

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_SAMPLES_PER_SHARD = 32
MANIFEST_NAME = "manifest.json"
SHARD_INDEX_NAME = "shards.jsonl"
ROW_PLAN_NAME = "rows.jsonl"
REVIEWS_NAME = "reviews.jsonl"  # review decisions, append-only (data_schema/review.py)
DOUBT_PASS_NAME = "doubt.json"  # what the last `labeler doubt` pass computed
STORE_NAME = "data.zarr"
TABLES_DIR = "tables"
LOCK_NAME = ".lock"
JOURNAL_NAME = ".journal"  # array files of shards being rewritten, until the rewrite commits (journal.py)
# lz4 + byte shuffle: 6x zstd-3's write speed at 55 % instead of 39 % of raw, and faster reads
# (benchmarks/bench_codecs.py, RESULTS.md). Arrays made with another codec keep theirs.
COMPRESSOR = "blosc-lz4-5-shuffle"
# Small per-shard table files are merged once this many have piled up (10^6 samples: ~500 files).
COMPACT_MIN_FILES = 64
Table = Literal["samples", "objects"]
TABLES: tuple[Table, Table] = ("samples", "objects")

_DTYPES = {
    "left": "uint8",
    "right": "uint8",
    "disparity_px": "float32",
    "depth_m": "float32",
    "confidence": "float32",
    "instance_ids": "uint16",
}


@dataclass(frozen=True)
class SampleArrays:
    """One sample's arrays, as stored: images (H, W, 3) uint8; maps (H, W) float32 (NaN invalid);
    instance_ids (H, W) uint16 (0 = no object)."""

    left: np.ndarray
    right: np.ndarray
    disparity_px: np.ndarray
    depth_m: np.ndarray
    confidence: np.ndarray
    instance_ids: np.ndarray

    def __post_init__(self) -> None:
        h, w = self.left.shape[:2]
        for name in ARRAY_NAMES:
            a = getattr(self, name)
            want = (h, w, 3) if name in ("left", "right") else (h, w)
            if a.shape != want or a.dtype != np.dtype(_DTYPES[name]):
                raise ValueError(f"{name} must be {want} {_DTYPES[name]}, got {a.shape} {a.dtype}")

    def digests(self) -> ArrayDigests:
        return ArrayDigests(**{name: digest(getattr(self, name)) for name in ARRAY_NAMES})


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _fill(dtype: str) -> float | int:
    return float("nan") if dtype.startswith("float") else 0


# ------------------------------------------------------------------------------------------ arrays


def store_layout(n_samples: int, height: int, width: int, samples_per_shard: int) -> StoreLayout:
    specs = []
    for name in ARRAY_NAMES:
        tail = [height, width, 3] if name in ("left", "right") else [height, width]
        specs.append(
            ArraySpec(
                name=name,
                dtype=_DTYPES[name],
                shape=[n_samples, *tail],
                chunk_shape=[1, *tail],
                shard_shape=[samples_per_shard, *tail],
                fill_value=None if _DTYPES[name].startswith("float") else 0,
                compressor=COMPRESSOR,
            )
        )
    return StoreLayout(samples_per_shard=samples_per_shard, arrays=specs)


def _codecs() -> dict[str, Any]:
    from zarr.codecs import BloscCodec, BloscShuffle

    return {
        "blosc-lz4-5-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),
        "blosc-zstd-3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),  # <= 0.1
    }


def _compressors() -> tuple[Any, ...]:
    return (_codecs()[COMPRESSOR],)


def _codec_name(arr: Any) -> str:
    """The name of an existing array's compressor (as `store_layout` spells it)."""
    import json

    found = [c.to_dict() for c in arr.compressors]
    for name, codec in _codecs().items():
        want = codec.to_dict()
        if len(found) == 1 and {k: v for k, v in found[0]["configuration"].items() if k != "typesize"} == {
            k: v for k, v in want["configuration"].items() if k != "typesize"
        }:
            return name
    return json.dumps(found, sort_keys=True)


def open_store(dataset: str | Path, mode: Literal["r", "r+", "a"] = "r") -> Any:
    """The dataset's Zarr group."""
    import zarr

    return zarr.open_group(Path(dataset) / STORE_NAME, mode=mode, zarr_format=3 if mode == "a" else None)


def prepare_store(dataset: str | Path, layout: StoreLayout) -> StoreLayout:
    """Create the arrays, or grow them to `layout`'s sample count (client side, before any shard write).
    Returns the layout as stored (arrays made earlier keep the compressor they were made with)."""
    root = Path(dataset) / STORE_NAME
    group = open_store(dataset, "a")
    specs = []
    for spec in layout.arrays:
        if spec.name in group:
            arr = group[spec.name]
            if list(arr.shape[1:]) != spec.shape[1:] or list(arr.shards or arr.chunks) != spec.shard_shape:
                raise InputError(
                    root / spec.name,
                    f"stored shape {arr.shape} / shards {arr.shards} do not match this run's "
                    f"{spec.shape} / {spec.shard_shape}",
                    "use a new --out",
                )
            if arr.shape[0] < spec.shape[0]:
                arr.resize(tuple(spec.shape))
            specs.append(spec.model_copy(update={"compressor": _codec_name(arr)}))
            continue
        specs.append(spec)
        group.create_array(
            spec.name,
            shape=tuple(spec.shape),
            chunks=tuple(spec.chunk_shape),
            shards=tuple(spec.shard_shape),
            dtype=spec.dtype,
            fill_value=_fill(spec.dtype),
            compressors=_compressors(),
        )
    return layout.model_copy(update={"arrays": specs})


def shard_range(shard: int, layout: StoreLayout) -> range:
    n = layout.arrays[0].shape[0]
    s = layout.samples_per_shard
    return range(shard * s, min((shard + 1) * s, n))


def write_shard(dataset: str | Path, shard: int, layout: StoreLayout, rows: dict[int, SampleArrays]) -> None:
    """Write one whole shard in one region write per array; rows missing from `rows` get the fill value.

    Must be the only writer of this shard (the DAG gives every shard one task).
    """
    span = range(shard * layout.samples_per_shard, (shard + 1) * layout.samples_per_shard)
    if not set(rows) <= set(span):
        raise ValueError(f"rows {sorted(set(rows) - set(span))} are not in shard {shard} ({span})")
    group = open_store(dataset, "r+")
    for spec in layout.arrays:
        arr = group[spec.name]
        stop = min(span.stop, arr.shape[0])
        block = np.full((stop - span.start, *spec.shape[1:]), _fill(spec.dtype), dtype=spec.dtype)
        for row, arrays in rows.items():
            block[row - span.start] = getattr(arrays, spec.name)
        arr[span.start : stop] = block


def open_arrays(dataset: str | Path) -> dict[str, Any]:
    """The dataset's arrays, opened once (opening one reads its metadata: keep them for many reads)."""
    group = open_store(dataset)
    return {name: group[name] for name in ARRAY_NAMES}


def read_rows(
    arrays: dict[str, Any], rows: slice | int, names: Sequence[str] = ARRAY_NAMES
) -> dict[str, np.ndarray]:
    """Arrays of one row (int) or of consecutive rows (slice: one read per array for a whole shard)."""
    return {name: arrays[name][rows] for name in names}


def _shard_file(dataset: str | Path, name: str, shard: int) -> Path:
    tail = "/0/0/0" if name in ("left", "right") else "/0/0"
    return Path(dataset) / STORE_NAME / name / "c" / f"{shard}{tail}"


def shard_array_files(dataset: str | Path, shard: int) -> dict[str, Path]:
    """Each array's file of this shard (whether written or not)."""
    return {name: _shard_file(dataset, name, shard) for name in ARRAY_NAMES}


def journal_path(dataset: str | Path) -> Path:
    return Path(dataset) / JOURNAL_NAME


def remove_shard_files(dataset: str | Path, shard: int) -> None:
    """Drop a damaged shard's array files (the writer then starts from nothing, never reading them)."""
    for name in ARRAY_NAMES:
        _shard_file(dataset, name, shard).unlink(missing_ok=True)


def shard_file_sizes(dataset: str | Path, shard: int) -> dict[str, int]:
    """Bytes of each array's file of this shard (0: not written, e.g. every row failed)."""
    out = {}
    for name in ARRAY_NAMES:
        path = _shard_file(dataset, name, shard)
        out[name] = path.stat().st_size if path.is_file() else 0
    return out


# ------------------------------------------------------------------------------------------ tables


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
    from labeler.tables import objects_table, rows_sha256, samples_table

    refs = []
    for table, rows, build in (("samples", samples, samples_table), ("objects", objects, objects_table)):
        path = table_dir(dataset, table) / part_name(shard)  # type: ignore[arg-type]
        _write_parquet_atomic(path, [build(rows)])  # type: ignore[arg-type]
        refs.append(TableRef(file=path.name, row_group=0, n_rows=len(rows), sha256=rows_sha256(rows)))
    return refs[0], refs[1]


def read_table(dataset: str | Path, table: Table, ref: TableRef) -> pa.Table:
    """One shard's rows of a table (one row group: the cost follows the shard, not the file)."""
    import pyarrow.parquet as pq

    path = table_dir(dataset, table) / ref.file
    with pq.ParquetFile(path) as f:
        return f.read_row_group(ref.row_group)


def shard_samples(dataset: str | Path, entry: ShardEntry) -> list[SampleRecord]:
    from labeler.tables import sample_from_row

    return [sample_from_row(r) for r in read_table(dataset, "samples", entry.samples).to_pylist()]


def shard_objects(dataset: str | Path, entry: ShardEntry) -> list[ObjectRow]:
    from labeler.tables import object_from_row

    return [object_from_row(r) for r in read_table(dataset, "objects", entry.objects).to_pylist()]


def table_dataset(dataset: str | Path, table: Table, entries: Sequence[ShardEntry]) -> Any:
    """A lazy pyarrow Dataset over exactly the row groups the shard index names (nothing stale)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    from labeler.tables import objects_schema, samples_schema

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

    new_refs: dict[Table, dict[int, TableRef]] = {}
    for table in TABLES:
        name = f"c-{small[0]:06d}-{small[-1]:06d}-{len(small)}.parquet"
        parts, refs = [], {}
        for i, s in enumerate(small):
            ref = entries[s].samples if table == "samples" else entries[s].objects
            parts.append(read_table(dataset, table, ref))
            refs[s] = ref.model_copy(update={"file": name, "row_group": i})
        path = table_dir(dataset, table) / name
        _write_parquet_atomic(path, parts)
        with pq.ParquetFile(path) as f:  # the merged file must hold what it replaces
            if f.metadata.num_row_groups != len(small):
                raise LabelerError(f"{path}: compaction wrote {f.metadata.num_row_groups} row groups")
        new_refs[table] = refs
    return [
        entries[s].model_copy(update={"samples": new_refs["samples"][s], "objects": new_refs["objects"][s]})
        for s in small
    ]


def remove_unreferenced_tables(dataset: str | Path, entries: dict[int, ShardEntry]) -> int:
    """Delete table files no current entry names (left by compaction or redone shards)."""
    removed = 0
    for table in TABLES:
        used = {(e.samples if table == "samples" else e.objects).file for e in entries.values()}
        base = table_dir(dataset, table)
        for path in base.glob("*.parquet") if base.is_dir() else []:
            if path.name not in used:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


# ------------------------------------------------------------------------------------- shard index


def shard_index_path(dataset: str | Path) -> Path:
    return Path(dataset) / SHARD_INDEX_NAME


def append_shard_entries(dataset: str | Path, entries: Sequence[ShardEntry]) -> None:
    """Append entries to shards.jsonl (the commit point of a shard): O(entry), whatever the index size.

    A line cut short by a kill is dropped first, so the file stays a sequence of whole lines.
    """
    path = shard_index_path(dataset)
    text = "".join(e.model_dump_json() + "\n" for e in entries)
    with open(path, "a+b") as f:
        _drop_partial_line(f)
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())


def _drop_partial_line(f: IO[bytes]) -> None:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos = size
    while pos > 0:  # back to the last newline, a block at a time
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        block = f.read(step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            f.truncate(pos - step + cut + 1)
            return
        pos -= step
    f.truncate(0)


def read_shard_index(dataset: str | Path, *, problems: list[str] | None = None) -> dict[int, ShardEntry]:
    """The current entry of every finished shard (the latest line wins). A damaged line is skipped
    (and named in `problems`); a last line cut short by a kill is ignored."""
    path = shard_index_path(dataset)
    if not path.is_file():
        return {}
    entries: dict[int, ShardEntry] = {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines if data.endswith(b"\n") else lines[:-1]
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            e = ShardEntry.model_validate_json(line)
        except ValueError as err:
            if problems is not None:
                problems.append(f"{path}:{n}: not a shard entry ({' '.join(str(err).split())[:160]})")
            continue
        entries[e.shard] = e
    return entries


def rewrite_shard_index(dataset: str | Path, entries: dict[int, ShardEntry]) -> None:
    """Replace shards.jsonl by the current entries only (after compaction; O(shards), once per run)."""
    from labeler.io import write_text_atomic

    write_text_atomic(
        shard_index_path(dataset), "".join(entries[s].model_dump_json() + "\n" for s in sorted(entries))
    )


def append_row_plan(dataset: str | Path, plans: Sequence[ShardPlan]) -> None:
    """Record which sample ids own which rows before any of them is labelled (rows.jsonl): a sample
    keeps its row for life, even when its shard is lost or finishes after later ones."""
    if not plans:
        return
    path = Path(dataset) / ROW_PLAN_NAME
    with open(path, "a+b") as f:
        _drop_partial_line(f)
        f.write("".join(p.model_dump_json() + "\n" for p in plans).encode())
        f.flush()
        os.fsync(f.fileno())


def read_row_plan(dataset: str | Path) -> dict[int, ShardPlan]:
    """Every shard's planned sample ids (the first plan of a shard is final)."""
    path = Path(dataset) / ROW_PLAN_NAME
    plans: dict[int, ShardPlan] = {}
    if not path.is_file():
        return plans
    data = path.read_bytes()
    lines = data.split(b"\n")
    for line in lines if data.endswith(b"\n") else lines[:-1]:
        if line.strip():
            try:
                p = ShardPlan.model_validate_json(line)
            except ValueError:
                continue  # a damaged plan line: those rows are planned again
            plans.setdefault(p.shard, p)
    return plans


def shard_index_bytes(dataset: str | Path) -> int:
    path = shard_index_path(dataset)
    return path.stat().st_size if path.is_file() else 0


def index_counts(entries: dict[int, ShardEntry]) -> DatasetCounts:
    ok = sum(e.n_ok for e in entries.values())
    failed = sum(e.n_failed for e in entries.values())
    return DatasetCounts(
        samples=ok + failed,
        ok=ok,
        failed=failed,
        objects=sum(e.n_objects for e in entries.values()),
        shards=len(entries),
    )


def dataset_version(run_key: str, entries: dict[int, ShardEntry]) -> str:
    """Content-derived: the run key and every shard's labels (which cover the array digests)."""
    h = hashlib.sha256(run_key.encode())
    for s in sorted(entries):
        e = entries[s]
        h.update(f"{s}:{e.content_sha256}\n".encode())
    return h.hexdigest()


def shard_is_intact(dataset: str | Path, entry: ShardEntry) -> bool:
    """Cheap store checks for resume: the table files exist and the array files have their recorded
    sizes. Content is `labeler validate`'s job."""
    for table in TABLES:
        ref = entry.samples if table == "samples" else entry.objects
        if not (table_dir(dataset, table) / ref.file).is_file():
            return False
    return shard_file_sizes(dataset, entry.shard) == entry.array_bytes


def write_table_file(dataset: str | Path, table: Table, name: str, parts: Sequence[pa.Table]) -> Path:
    """A table file under tables/<table>/ with one row group per part, atomically: finished shards' rows
    rewritten (`labeler doubt`); the caller appends the entries that name it, then removes what no entry
    names, as compaction does."""
    path = table_dir(dataset, table) / name
    _write_parquet_atomic(path, parts)
    return path


# ----------------------------------------------------------------------------------------- reviews


def reviews_path(dataset: str | Path) -> Path:
    return Path(dataset) / REVIEWS_NAME


def append_reviews(dataset: str | Path, reviews: Sequence[Review]) -> None:
    """Append decisions to reviews.jsonl and fsync before returning: once this returns, a crash keeps
    them. Writers of several processes take turns (flock); a line cut short by a kill is dropped first."""
    import fcntl

    text = "".join(r.model_dump_json() + "\n" for r in reviews).encode()
    with open(reviews_path(dataset), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            _drop_partial_line(f)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_reviews(dataset: str | Path, *, problems: list[str] | None = None) -> list[Review]:
    """Every decision in the order made. A damaged line is skipped (and named in `problems`); a last
    line cut short by a kill is ignored."""
    path = reviews_path(dataset)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out = []
    for n, line in enumerate(lines if data.endswith(b"\n") else lines[:-1], 1):
        if not line.strip():
            continue
        try:
            out.append(Review.model_validate_json(line))
        except ValueError as err:
            if problems is not None:
                problems.append(f"{path}:{n}: not a review decision ({' '.join(str(err).split())[:160]})")
    return out


def reviews_bytes(dataset: str | Path) -> int:
    """Size of reviews.jsonl (0: none): readers cache decisions until it changes."""
    path = reviews_path(dataset)
    return path.stat().st_size if path.is_file() else 0


def write_doubt_pass(dataset: str | Path, record: DoubtPass) -> None:
    from labeler.io import write_text_atomic

    write_text_atomic(Path(dataset) / DOUBT_PASS_NAME, record.model_dump_json(indent=1))


def read_doubt_pass(dataset: str | Path) -> DoubtPass | None:
    path = Path(dataset) / DOUBT_PASS_NAME
    try:
        return DoubtPass.model_validate_json(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------- manifest


def manifest_path(dataset: str | Path) -> Path:
    return Path(dataset) / MANIFEST_NAME


def has_manifest(dataset: str | Path) -> bool:
    return manifest_path(dataset).is_file()


def write_manifest(dataset: str | Path, manifest: Manifest) -> None:
    from labeler.io import write_text_atomic

    write_text_atomic(manifest_path(dataset), manifest.model_dump_json(indent=1))


def manifest_schema_version(dataset: str | Path) -> int | None:
    """The manifest's schema_version without validating the rest (None: no readable manifest)."""
    try:
        return int(json.loads(manifest_path(dataset).read_text()).get("schema_version"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load_manifest(dataset: str | Path) -> Manifest:
    """The v2 dataset record; a v1 dataset is one line naming `labeler migrate`."""
    path = manifest_path(dataset)
    if not path.is_file():
        raise InputError(
            path,
            "no manifest: not a labeler dataset (or its first run never started)",
            "run `labeler pseudo-label` or `labeler run` with --out pointing here",
        )
    if manifest_schema_version(dataset) == 1:
        raise InputError(
            path, "a v1 dataset (one manifest with every sample)", f"convert it: labeler migrate {dataset}"
        )
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValueError as err:
        raise InputError(
            path,
            f"not a valid manifest ({' '.join(str(err).split())[:200]})",
            "re-run the labelling command with this --out: it rebuilds the manifest from the shard index",
        ) from None


@contextmanager
def dataset_lock(dataset: str | Path) -> Iterator[None]:
    """Exclusive lock for a dataset's writer; the OS drops it when the process dies (no stale lock)."""
    import fcntl

    path = Path(dataset) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise LabelerError(
                f"{dataset}: another labeler process is writing this dataset ({holder}); wait for it or "
                "use another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
