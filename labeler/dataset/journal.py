"""A rollback journal for shards rewritten in place, so a rewrite is all-or-nothing against kill -9.

A finished shard is rewritten when samples join it (planned ones that arrived late, retried failures, a
changed capture): its carried-over samples are written again with the new ones. The shard's array files
are replaced one array at a time (zarr writes each file atomically, but not the set), and the rewrite
counts only once its entry is appended to the shard index. Before the first array is written, every
existing file of the shard is hard-linked into `.journal/<shard>/` (no copy: zarr replaces a file by
renaming a new one over it, so the link keeps the old bytes) with a record of the entry it belongs to.

- the rewrite commits → the journal is dropped;
- the rewrite fails in the run → rolled back at once;
- the process dies → the next writer (`recover`, under the dataset lock) rolls back every journal whose
  shard still has the entry it recorded, and drops the others (their commit happened); `validate` names an
  open journal until then.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from data_schema.manifest import ShardEntry
from labeler.dataset import shards
from labeler.dataset.index import read_shard_index
from labeler.io import write_text_atomic

_RECORD = "journal.json"


def _dir(dataset: str | Path, shard: int) -> Path:
    return shards.journal_path(dataset) / str(shard)


def begin(dataset: str | Path, shard: int, committed_sha256: str) -> None:
    """Keep the shard's current array files (those of the committed entry whose `entry_sha256` is
    `committed_sha256`) until `end`."""
    folder = _dir(dataset, shard)
    if folder.exists():  # an incomplete journal of an earlier attempt: the files are still the originals
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    kept = {}
    for name, path in shards.shard_array_files(dataset, shard).items():
        if path.is_file():
            os.link(path, folder / name)
            kept[name] = path.stat().st_size
    # the record is written last: a journal without it was cut short before any array was rewritten
    write_text_atomic(folder / _RECORD, json.dumps({"committed_sha256": committed_sha256, "files": kept}))


def end(dataset: str | Path, shard: int) -> None:
    """The rewrite committed (or never started): drop the journal."""
    shutil.rmtree(_dir(dataset, shard), ignore_errors=True)


def roll_back(dataset: str | Path, shard: int) -> bool:
    """Put the journalled files back (files the rewrite added are removed); False without a journal."""
    folder = _dir(dataset, shard)
    record = _read(folder)
    if record is None:
        end(dataset, shard)
        return False
    for name, path in shards.shard_array_files(dataset, shard).items():
        if name in record["files"]:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / name, path)
        else:
            path.unlink(missing_ok=True)
    end(dataset, shard)
    return True


def recover(dataset: str | Path) -> list[int]:
    """After a kill: roll back the rewrites that never committed, drop the journals of those that did.
    Returns the shards rolled back. Call it holding the dataset lock, before planning."""
    root = shards.journal_path(dataset)
    if not root.is_dir():
        return []
    index = read_shard_index(dataset)
    rolled = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.name.isdigit():
            shutil.rmtree(folder, ignore_errors=True)
            continue
        shard, record = int(folder.name), _read(folder)
        entry = index.get(shard)
        if record is not None and entry is not None and _is_recorded(entry, record):
            roll_back(dataset, shard)
            rolled.append(shard)
        else:
            end(dataset, shard)
    return rolled


def open_journals(dataset: str | Path) -> list[int]:
    """Shards with a rewrite journal left by a process that died (what `validate` reports)."""
    root = shards.journal_path(dataset)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / _RECORD).is_file())


def entry_sha256(entry: ShardEntry) -> str:
    """The identity of a committed entry (its whole line): what a journal records it rewrites."""
    import hashlib

    return hashlib.sha256(entry.model_dump_json().encode()).hexdigest()


def _is_recorded(entry: ShardEntry, record: dict) -> bool:
    """The index still holds the entry the journal kept the files of: the rewrite never committed. (By
    the whole entry, not its files' sizes: a repair journals shards whose files are damaged.)"""
    return entry_sha256(entry) == record["committed_sha256"]


def _read(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / _RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "files" in record else None
