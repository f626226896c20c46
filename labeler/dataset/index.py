"""The shard index (`shards.jsonl`: one committed entry per shard, append-only) and the row plan
(`rows.jsonl`: which sample goes to which row), and what is derived from the index alone: counts and the
dataset version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from data_schema.manifest import (
    DatasetCounts,
    ShardEntry,
    ShardPlan,
)
from labeler.dataset.shards import shard_file_sizes
from labeler.dataset.tables import TABLES, table_dir
from labeler.io import append_jsonl, read_jsonl

SHARD_INDEX_NAME = "shards.jsonl"
ROW_PLAN_NAME = "rows.jsonl"


def shard_index_path(dataset: str | Path) -> Path:
    return Path(dataset) / SHARD_INDEX_NAME


def append_shard_entries(dataset: str | Path, entries: Sequence[ShardEntry]) -> None:
    """Append entries to shards.jsonl (the commit point of a shard): O(entry), whatever the index size."""
    append_jsonl(shard_index_path(dataset), entries)


def read_shard_index(dataset: str | Path, *, problems: list[str] | None = None) -> dict[int, ShardEntry]:
    """The current entry of every finished shard (the latest line wins). A damaged line is skipped
    (and named in `problems`); a last line cut short by a kill is ignored."""
    entries: dict[int, ShardEntry] = {}
    for e in read_jsonl(shard_index_path(dataset), ShardEntry, what="shard entry", problems=problems):
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
    append_jsonl(Path(dataset) / ROW_PLAN_NAME, plans)


def read_row_plan(dataset: str | Path, *, problems: list[str] | None = None) -> dict[int, ShardPlan]:
    """Every shard's planned sample ids (the first plan of a shard is final; a damaged plan line is
    skipped and named in `problems`)."""
    plans: dict[int, ShardPlan] = {}
    path = Path(dataset) / ROW_PLAN_NAME
    for p in read_jsonl(path, ShardPlan, what="row plan", problems=problems):
        plans.setdefault(p.shard, p)
    return plans


def shard_index_bytes(dataset: str | Path) -> int:
    path = shard_index_path(dataset)
    return path.stat().st_size if path.is_file() else 0


def index_counts(entries: dict[int, ShardEntry]) -> DatasetCounts:
    ok = sum(e.n_ok for e in entries.values())
    failed = sum(e.n_failed for e in entries.values())
    skipped = sum(e.n_skipped for e in entries.values())
    return DatasetCounts(
        samples=ok + failed + skipped,
        ok=ok,
        failed=failed,
        skipped=skipped,
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
