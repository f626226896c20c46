"""The embeddings of a dataset (data_schema/curation.py has the layout): one float16 row per sample in
`embeddings/samples.zarr` (an array of the dataset's rows, one chunk per dataset shard, so each shard has
one writer) and one per object in the `embedding` column of `embeddings/objects/s-<shard>.parquet`.

A shard's embeddings count once its `EmbeddingShard` line is in `embeddings/index.jsonl` (appended after
its array chunk and table file are written): an interrupted `labeler embed` resumes at the first shard
without one. Embeddings of another key (model, weights, input size, dataset version) are replaced, all of
them: `begin_embeddings` removes only the files this module writes.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_schema.curation import EmbeddingSet, EmbeddingShard
from data_schema.manifest import Manifest, ShardEntry
from labeler.io import append_jsonl, read_jsonl, write_text_atomic

EMBEDDINGS_DIR = "embeddings"
_RECORD = "embeddings.json"
_INDEX = "index.jsonl"
_SAMPLES = "samples.zarr"
_OBJECTS = "objects"


def embeddings_dir(dataset: str | Path) -> Path:
    return Path(dataset) / EMBEDDINGS_DIR


def read_embedding_record(dataset: str | Path) -> EmbeddingSet | None:
    path = embeddings_dir(dataset) / _RECORD
    try:
        return EmbeddingSet.model_validate_json(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def embedding_index(
    dataset: str | Path, key: str, *, problems: list[str] | None = None
) -> dict[int, EmbeddingShard]:
    """The finished shards of embeddings made under `key` (the latest line of a shard wins)."""
    lines = read_jsonl(
        embeddings_dir(dataset) / _INDEX, EmbeddingShard, what="embedding shard", problems=problems
    )
    return {e.shard: e for e in lines if e.key == key}


def begin_embeddings(
    dataset: str | Path, record: EmbeddingSet, manifest: Manifest
) -> dict[int, EmbeddingShard]:
    """Write the record and make the sample array (or keep both when the key is the same); returns the
    shards already done under this key."""
    import zarr

    folder = embeddings_dir(dataset)
    old = read_embedding_record(dataset)
    if old is not None and old.key != record.key:
        for name in (_INDEX, _RECORD):
            (folder / name).unlink(missing_ok=True)
        for name in (_SAMPLES, _OBJECTS):
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _OBJECTS).mkdir(exist_ok=True)
    n_rows = manifest.layout.arrays[0].shape[0]
    width = 2 * record.embed_dim
    sps = manifest.layout.samples_per_shard
    path = folder / _SAMPLES
    if path.is_dir():
        arr = zarr.open_array(path, mode="r+")
        if arr.shape[0] < n_rows:
            arr.resize((n_rows, width))
    else:
        zarr.create_array(
            store=str(path), shape=(n_rows, width), chunks=(sps, width), dtype="float16", fill_value=np.nan
        )
    write_text_atomic(folder / _RECORD, record.model_dump_json(indent=1))
    return embedding_index(dataset, record.key)


def objects_sha256(rows: np.ndarray, ids: np.ndarray, emb: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (rows.astype(np.int64), ids.astype(np.int64), np.ascontiguousarray(emb, dtype=np.float16)):
        h.update(a.tobytes())
    return h.hexdigest()


def write_embedding_files(
    dataset: str | Path,
    key: str,
    entry: ShardEntry,
    rows: list[int],
    samples: np.ndarray,
    objects: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> EmbeddingShard:
    """Write one dataset shard's embeddings (its single writer: its chunk of the sample array, its objects
    file) and return its index line; `commit_embedding_shard` (one process, the run's) appends it.

    Args:
        rows: the shard's ok rows, in order.
        samples: (len(rows), 2C) float16.
        objects: (rows (M,), ids (M,), embeddings (M, C) float16) of the shard's objects in table order.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from labeler.io import atomic_path

    folder = embeddings_dir(dataset)
    arr = zarr.open_array(folder / _SAMPLES, mode="r+")
    sps = arr.chunks[0]
    start, stop = entry.shard * sps, min((entry.shard + 1) * sps, arr.shape[0])
    block = np.full((stop - start, arr.shape[1]), np.nan, dtype=np.float16)
    block[np.asarray(rows, dtype=np.int64) - start] = samples
    arr[start:stop] = block
    o_rows, o_ids, o_emb = objects
    width = o_emb.shape[1] if o_emb.ndim == 2 else arr.shape[1] // 2
    table = pa.table(
        {
            "row": pa.array(o_rows, pa.int64()),
            "id": pa.array(o_ids, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(o_emb, dtype=np.float16).ravel(), pa.float16()), width
            ),
        }
    )
    with atomic_path(folder / _OBJECTS / f"s-{entry.shard:06d}.parquet") as tmp:
        pq.write_table(table, tmp)
    done = EmbeddingShard(
        shard=entry.shard,
        key=key,
        rows=list(rows),
        n_objects=len(o_ids),
        samples_sha256=hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float16).tobytes()).hexdigest(),
        objects_sha256=objects_sha256(o_rows, o_ids, o_emb),
    )
    return done


def commit_embedding_shard(dataset: str | Path, done: EmbeddingShard) -> None:
    """A shard's embeddings count from here on (see the module docstring)."""
    append_jsonl(embeddings_dir(dataset) / _INDEX, [done])


def _read_objects(dataset: str | Path, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(embeddings_dir(dataset) / _OBJECTS / f"s-{shard:06d}.parquet")
    col = t.column("embedding").combine_chunks()
    width = col.type.list_size
    emb = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float16).reshape(-1, width)
    return t.column("row").to_numpy(), t.column("id").to_numpy(), emb


@dataclass(frozen=True)
class Embeddings:
    """A dataset's embeddings as one block: samples (N, 2C) with their rows, objects (M, C) with (row, id)."""

    record: EmbeddingSet
    rows: np.ndarray  # (N,) int64, ascending
    samples: np.ndarray  # (N, 2C) float16
    object_rows: np.ndarray  # (M,) int64
    object_ids: np.ndarray  # (M,) int32
    objects: np.ndarray  # (M, C) float16


def load_embeddings(dataset: str | Path) -> Embeddings | None:
    """Every finished shard's embeddings (None: `labeler embed` never ran)."""
    import zarr

    record = read_embedding_record(dataset)
    if record is None:
        return None
    index = embedding_index(dataset, record.key)
    arr = zarr.open_array(embeddings_dir(dataset) / _SAMPLES, mode="r")
    rows = np.asarray(sorted(r for e in index.values() for r in e.rows), dtype=np.int64)
    samples = np.asarray(arr[:])[rows] if rows.size else np.zeros((0, arr.shape[1]), np.float16)
    parts = [_read_objects(dataset, s) for s in sorted(index)]
    c = record.embed_dim
    return Embeddings(
        record=record,
        rows=rows,
        samples=np.asarray(samples, dtype=np.float16),
        object_rows=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64),
        object_ids=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32),
        objects=np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, c), np.float16),
    )


def embedding_problems(
    dataset: str | Path, manifest: Manifest, entries: list[ShardEntry], objects: Any
) -> list[str]:
    """`labeler validate`'s checks of the embeddings, if any: made for this dataset version, every shard
    embedded, every ok row and object present once, finite, and equal to the hashes in the index.

    Args:
        objects: the objects table (pyarrow Table with `row`, `id`).
    """
    import zarr

    record = read_embedding_record(dataset)
    where = embeddings_dir(dataset)
    if record is None:
        return (
            [f"{where}: unreadable {_RECORD}; run `labeler embed {dataset}` again"] if where.is_dir() else []
        )
    if record.dataset_version != manifest.dataset_version:
        return [
            f"{where}: made for dataset {record.dataset_version[:12]}, the dataset is now "
            f"{manifest.dataset_version[:12]} (stale); run `labeler embed {dataset}` again"
        ]
    problems: list[str] = []
    index = embedding_index(dataset, record.key, problems=problems)
    try:
        arr = zarr.open_array(where / _SAMPLES, mode="r")
        block = np.asarray(arr[:])
    except Exception as err:  # noqa: BLE001 — unreadable arrays are damage to report
        return [*problems, f"{where / _SAMPLES}: cannot read ({' '.join(str(err).split())[:200]})"]
    if block.shape[1] != 2 * record.embed_dim:
        problems.append(f"{where / _SAMPLES}: {block.shape[1]} wide, the record says 2 x {record.embed_dim}")
        return problems
    known = {
        (int(r), int(i))
        for r, i in zip(objects.column("row").to_pylist(), objects.column("id").to_pylist(), strict=True)
    }
    for entry in entries:
        e = index.get(entry.shard)
        if e is None:
            problems.append(f"{where}: shard {entry.shard} has no embeddings; run `labeler embed {dataset}`")
            continue
        rows = np.asarray(e.rows, dtype=np.int64)
        got = block[rows]
        if hashlib.sha256(np.ascontiguousarray(got).tobytes()).hexdigest() != e.samples_sha256:
            problems.append(
                f"{where}: shard {entry.shard}'s sample embeddings differ from their hash (damaged)"
            )
        elif not np.isfinite(got.astype(np.float32)).all():
            problems.append(f"{where}: shard {entry.shard} has non-finite sample embeddings")
        try:
            o_rows, o_ids, o_emb = _read_objects(dataset, entry.shard)
        except Exception as err:  # noqa: BLE001
            problems.append(
                f"{where}: shard {entry.shard}'s object embeddings unreadable ({type(err).__name__})"
            )
            continue
        if objects_sha256(o_rows, o_ids, o_emb) != e.objects_sha256:
            problems.append(
                f"{where}: shard {entry.shard}'s object embeddings differ from their hash (damaged)"
            )
        want = {k for k in known if entry.row_start <= k[0] < entry.row_stop}
        have = {(int(r), int(i)) for r, i in zip(o_rows, o_ids, strict=True)}
        if have != want:
            problems.append(
                f"{where}: shard {entry.shard}: {len(want - have)} objects without an embedding, "
                f"{len(have - want)} embeddings of no object; run `labeler embed {dataset}` again"
            )
    return problems
