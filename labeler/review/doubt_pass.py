"""`labeler doubt DATASET`: the doubt signals that need more than one sample's labels, as a pass over a
finished dataset.

- `mono_disagreement` (with `--stereo-weights` or `--heads`): the stereo depth against a monocular model's
  (labeler/review/mono.py), by surface normals (labeler/doubt.py);
- `temporal_instability` (video captures): each frame against its neighbour;
- `thickness_px` / `edge_alignment` where a table written before they existed holds None.

Why a pass and not a task of the labelling graph: it works for every dataset (an sgbm run, an old one, a
migrated one) with whichever model the user has, and again when a better one arrives, without relabelling;
the video signal needs neighbouring frames, which no per-sample task sees; and the labelling run's GPU
schedule stays as it is. Inside the pass the GPU does not wait: one thread reads the next shard and another
computes the previous shard's signals while the model runs on the current one.

The signals are derived, not labels: they are left out of the content hash, so the dataset version stays.
Rewritten rows go to new table files (one row group per shard, up to `COMPACT_MIN_FILES` shards a file);
their entries are appended to the shard index (the commit point, as compaction does), then the index is
rewritten, the manifest's `shard_index_bytes` updated and the old files removed. A kill at any point
leaves a valid dataset. The dataset's lock is held throughout.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.manifest import ObjectRow, SampleRecord, ShardEntry, TableRef
from data_schema.review import DoubtPass
from labeler.dataset import shards
from labeler.dataset.index import (
    append_shard_entries,
    read_shard_index,
    rewrite_shard_index,
    shard_index_bytes,
)
from labeler.dataset.manifest import check_sealed, dataset_lock, load_manifest, write_manifest
from labeler.dataset.seal import seal_root_files
from labeler.dataset.sidecars import write_doubt_pass
from labeler.dataset.tables import (
    COMPACT_MIN_FILES,
    remove_unreferenced_tables,
    table_files,
    write_table_file,
)
from labeler.errors import LabelerError

if TYPE_CHECKING:
    from labeler.dataset.reader import Dataset, ShardRows
    from labeler.review.mono import MonoModel

_READ = ("left", "disparity_px", "depth_m", "instance_ids")


@dataclass(frozen=True)
class _Block:
    rows: ShardRows
    arrays: dict[str, np.ndarray]  # the ok samples' arrays, stacked in `rows.ok` order
    neighbours: dict[str, tuple[np.ndarray, np.ndarray]]  # sample id -> its neighbour's (left, depth_m)


def _load(
    store: dict[str, Any], rows: ShardRows, neighbour_of: dict[str, str], row_of: dict[str, int]
) -> _Block:
    ok = rows.ok
    if not ok:
        return _Block(rows, {}, {})
    start = rows.entry.row_start
    block = shards.read_rows(store, slice(start, max(s.row for s in ok) + 1), _READ)
    arrays = {n: np.stack([block[n][s.row - start] for s in ok]) for n in _READ}
    here = {s.sample_id: s.row for s in ok}
    neighbours = {}
    for s in ok:
        other = neighbour_of.get(s.sample_id)
        if other is None or other not in row_of:
            continue
        r = row_of[other]
        if other in here:
            neighbours[s.sample_id] = (block["left"][r - start], block["depth_m"][r - start])
        else:
            a = shards.read_rows(store, r, ("left", "depth_m"))
            neighbours[s.sample_id] = (a["left"], a["depth_m"])
    return _Block(rows, arrays, neighbours)


def _signals(
    block: _Block, monos: list[np.ndarray] | None, kind: str, ds: Dataset
) -> tuple[list[SampleRecord], list[ObjectRow], int, int]:
    """The shard's rows with the new signals; how many samples got mono / temporal signals."""
    from labeler.depth import disparity_to_depth
    from labeler.doubt import align_inverse_depth, normal_disagreement, shape_signals, temporal_instability

    updates: dict[int, dict[str, Any]] = {}
    object_updates: dict[tuple[int, int], dict[str, Any]] = {}
    n_mono = n_temporal = 0
    for k, rec in enumerate(block.rows.ok):
        a = {n: block.arrays[n][k] for n in _READ}
        up: dict[str, Any] = {}
        objects = block.rows.objects_of(rec.row)
        if any(o.thickness_px is None for o in objects):
            for oid, (thick, align) in shape_signals(a["instance_ids"], a["depth_m"]).items():
                object_updates[(rec.row, oid)] = {"thickness_px": thick, "edge_alignment": align}
        if monos is not None:
            mono = monos[k]
            if kind == "inverse":
                disp = align_inverse_depth(mono, a["disparity_px"])
                mono_m = None if disp is None else disparity_to_depth(disp, ds.manifest.depth)
            else:
                mono_m = mono
            if mono_m is not None:
                share, per = normal_disagreement(
                    a["depth_m"],
                    mono_m,
                    a["instance_ids"],
                    ds.manifest.calibration.rectification.left_intrinsics,
                )
                up["mono_disagreement"] = share
                n_mono += share is not None
                for oid, v in per.items():
                    object_updates.setdefault((rec.row, oid), {})["mono_disagreement"] = v
        if rec.sample_id in block.neighbours:
            left_b, depth_b = block.neighbours[rec.sample_id]
            up["temporal_instability"] = temporal_instability(left_b, depth_b, a["left"], a["depth_m"])
            n_temporal += up["temporal_instability"] is not None
        if up:
            updates[rec.row] = up
    samples = [
        s.model_copy(update=updates[s.row]) if s.status == "ok" and s.row in updates else s
        for s in block.rows.samples
    ]
    objects = [
        o.model_copy(update=object_updates[(o.row, o.id)]) if (o.row, o.id) in object_updates else o
        for o in block.rows.objects
    ]
    return samples, objects, n_mono, n_temporal


class _Writer:
    """Collects rewritten shards and writes them `per_file` at a time; appends their entries."""

    def __init__(self, dataset: Path, per_file: int) -> None:
        self.dataset, self.per_file = dataset, per_file
        self.pending: list[tuple[ShardEntry, list[SampleRecord], list[ObjectRow]]] = []
        self.written = 0

    def add(self, entry: ShardEntry, samples: list[SampleRecord], objects: list[ObjectRow]) -> None:
        from labeler.dataset.tables import content_sha256

        if content_sha256(samples, objects) != entry.content_sha256:  # never: only doubt fields changed
            raise LabelerError(f"shard {entry.shard}: the doubt pass would change its labels")
        self.pending.append((entry, samples, objects))
        if len(self.pending) >= self.per_file:
            self.flush()

    def flush(self) -> None:
        from labeler.dataset.tables import objects_table, rows_sha256, samples_table

        if not self.pending:
            return
        shards_ = [e.shard for e, _, _ in self.pending]
        refs: dict[str, list[TableRef]] = {}
        for table, build, pick in (
            ("samples", samples_table, lambda p: p[1]),
            ("objects", objects_table, lambda p: p[2]),
        ):
            hashes = [rows_sha256(pick(p)) for p in self.pending]
            tag = hashlib.sha256("".join(hashes).encode()).hexdigest()[:12]
            name = f"d-{shards_[0]:06d}-{shards_[-1]:06d}-{len(shards_)}-{tag}.parquet"
            parts = [build(pick(p)) for p in self.pending]
            digest = write_table_file(self.dataset, table, name, parts)  # type: ignore[arg-type]
            refs[table] = [
                TableRef(file=name, row_group=i, n_rows=len(pick(p)), sha256=h, file_sha256=digest)
                for i, (p, h) in enumerate(zip(self.pending, hashes, strict=True))
            ]
        entries = [
            e.model_copy(update={"samples": refs["samples"][i], "objects": refs["objects"][i]})
            for i, (e, _, _) in enumerate(self.pending)
        ]
        append_shard_entries(self.dataset, entries)
        self.written += len(entries)
        self.pending = []


def run_doubt(
    dataset: str | Path,
    *,
    model: MonoModel | None = None,
    progress: Callable[[int], None] | None = None,
) -> DoubtPass:
    """Add the pass's signals to every finished shard (see the module docstring); returns doubt.json."""
    from importlib import metadata

    from labeler.dataset.reader import open_dataset
    from labeler.doubt import video_neighbours

    dataset = Path(dataset)
    started = time.perf_counter()
    with dataset_lock(dataset):
        check_sealed(dataset, doing="a doubt pass")
        ds = open_dataset(dataset, verify=False)
        t = ds.samples.to_table(columns=["sample_id", "row", "status"])
        ids, status = t.column("sample_id").to_pylist(), t.column("status").to_pylist()
        ok_ids = [s for s, st in zip(ids, status, strict=True) if st == "ok"]
        row_of = {
            s: r for s, r, st in zip(ids, t.column("row").to_pylist(), status, strict=True) if st == "ok"
        }
        was_current = ds.manifest.shard_index_bytes == shard_index_bytes(dataset)
        store = shards.open_arrays(dataset)
        neighbour_of = video_neighbours(ok_ids)
        entries = ds.entries
        writer = _Writer(dataset, COMPACT_MIN_FILES)
        n_mono = n_temporal = 0
        with ThreadPoolExecutor(2) as pool:  # one thread reads ahead, one computes signals behind
            nxt: Future[_Block] | None = (
                pool.submit(_load, store, ds.shard_rows(entries[0]), neighbour_of, row_of)
                if entries
                else None
            )
            behind: Future[tuple[list[SampleRecord], list[ObjectRow], int, int]] | None = None
            behind_entry: ShardEntry | None = None

            def collect() -> None:
                nonlocal n_mono, n_temporal
                if behind is None or behind_entry is None:
                    return
                samples, objects, m, v = behind.result()
                n_mono, n_temporal = n_mono + m, n_temporal + v
                rows = ds.shard_rows(behind_entry)
                if samples != rows.samples or objects != rows.objects:
                    writer.add(behind_entry, samples, objects)
                if progress is not None:
                    progress(1)

            for k, entry in enumerate(entries):
                assert nxt is not None
                block = nxt.result()
                if k + 1 < len(entries):
                    nxt = pool.submit(_load, store, ds.shard_rows(entries[k + 1]), neighbour_of, row_of)
                lefts = list(block.arrays["left"]) if block.arrays else []
                monos = model.predict_many(lefts) if model is not None else None  # the GPU's part
                collect()
                behind = pool.submit(_signals, block, monos, model.kind if model else "", ds)
                behind_entry = entry
            collect()
        writer.flush()
        if writer.written:
            index = read_shard_index(dataset)
            rewrite_shard_index(dataset, index)
            manifest = load_manifest(dataset)
            # counts and version are the same; a stale manifest stays stale (its counts), but the index
            # it seals is this one, which the pass checked before rewriting it
            size = shard_index_bytes(dataset) if was_current else manifest.shard_index_bytes
            update = {"shard_index_bytes": size, "files": seal_root_files(dataset)}
            write_manifest(dataset, manifest.model_copy(update=update))
            remove_unreferenced_tables(dataset, index, table_files(entries))
        try:
            version = metadata.version("labeler")
        except metadata.PackageNotFoundError:
            version = "unknown"
        record = DoubtPass(
            dataset_version=ds.manifest.dataset_version,
            model=model.name if model is not None else None,
            n_mono=n_mono,
            n_temporal=n_temporal,
            n_shards_rewritten=writer.written,
            seconds=time.perf_counter() - started,
            labeler_version=version,
        )
        record = write_doubt_pass(dataset, record)
    return record
