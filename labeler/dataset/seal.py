"""The chain of hashes that guards every file of a dataset, rooted in `manifest.json`.

    manifest.json   record_sha256 (its own fields)            files: every root file's size and sha256,
                                                              and each zarr.json of data.zarr
      shards.jsonl  sealed prefix (append-only)  ──► each ShardEntry: the rows' sha256 and the file's
                                                     sha256 of each table part, each array's shard-file
                                                     size and sha256; the samples table holds every
                                                     array's per-sample digest
      rows.jsonl    sealed prefix (append-only)
      settings.json exact (RunSettings: what the run key hashes)
    reviews.jsonl   each decision line chains the one before (labeler/dataset/sidecars.py)
    doubt.json      record_sha256 (its own fields)

Sealing is generic: every regular file of the dataset's root except the side files below is sealed, so
a new root file the writer adds is guarded without naming it here. The writer seals at the start and end
of a run (O(size of the root files), once per run; a shard's commit costs what it did). `root_problems`
is what `labeler validate`, the reader and every writer check first: a writer refuses to write over a
dataset whose seal is broken (naming `labeler repair`), so nothing is deleted because an index lost track
of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from data_schema.manifest import FileSeal, Manifest, RunSettings

M = TypeVar("M", bound=BaseModel)
SETTINGS_NAME = "settings.json"
# Root files with a writer of their own (each guarded its own way, or, like `labeler curate`'s report, a
# record that the command writes again from the embeddings), or none to guard (the lock).
SIDE_FILES = frozenset(
    {"manifest.json", "reviews.jsonl", "doubt.json", "index.html", ".lock", "curation.json"}
)


# Fields added to nested records after sealing existed: left out of the hash while None, so a record
# sealed before the field existed (it reads back as None) keeps its hash.
_ADDED_LATER = frozenset({"file_sha256"})


def _without_unset_later(data: object) -> object:
    if isinstance(data, dict):
        return {k: _without_unset_later(v) for k, v in data.items() if not (k in _ADDED_LATER and v is None)}
    if isinstance(data, list):
        return [_without_unset_later(v) for v in data]
    return data


def record_sha256(record: BaseModel) -> str:
    """sha256 of a record's canonical JSON without its `record_sha256` field."""
    data = _without_unset_later(record.model_dump(mode="json", exclude={"record_sha256"}))
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def sealed(record: M) -> M:
    """The record with its own hash in `record_sha256`."""
    return record.model_copy(update={"record_sha256": record_sha256(record)})


def record_intact(record: BaseModel) -> bool:
    """False when the record was edited after it was sealed (records from before sealing pass)."""
    stored = getattr(record, "record_sha256", None)
    return stored is None or stored == record_sha256(record)


def _hash_prefix(path: Path, n: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = n
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def root_files(dataset: str | Path) -> list[Path]:
    """The dataset's root files the manifest seals (regular files, not hidden, not side files)."""
    root = Path(dataset)
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in SIDE_FILES and ".tmp" not in p.name
    )


def seal_root_files(dataset: str | Path) -> dict[str, FileSeal]:
    """Size and sha256 of every root file now, and of the store's metadata (each zarr.json, which only
    the writer's `begin` changes, before it seals): what the manifest records when it is written."""
    from labeler.dataset.shards import metadata_files

    out = {}
    for path in [*root_files(dataset), *metadata_files(dataset)]:
        size = path.stat().st_size
        out[path.relative_to(dataset).as_posix()] = FileSeal(bytes=size, sha256=_hash_prefix(path, size))
    return out


def file_matches(path: Path, seal: FileSeal) -> bool:
    """The file is there with exactly the size and sha256 sealed."""
    return (
        path.is_file() and path.stat().st_size == seal.bytes and _hash_prefix(path, seal.bytes) == seal.sha256
    )


def root_problems(dataset: str | Path, files: dict[str, FileSeal], *, cut_tail: bool = False) -> list[str]:
    """Every sealed root file that is missing, shorter, or changed within its sealed bytes; and a root
    file the seal does not know while the seal knows others (one line each). An append-only `.jsonl`
    file the seal does not know was created after it (a run's first commit) and counts as sealed empty."""
    root = Path(dataset)
    problems = []
    for name, seal in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing (the manifest sealed it at {seal.bytes} bytes)")
            continue
        size = path.stat().st_size
        append_only = name.endswith(".jsonl")
        if size < seal.bytes or (size != seal.bytes and not append_only):
            problems.append(f"{path}: {size} bytes, the manifest sealed {seal.bytes} (truncated or edited)")
        elif _hash_prefix(path, seal.bytes) != seal.sha256:
            problems.append(
                f"{path}: content differs from the sha256 the manifest sealed (edited or damaged)"
            )
        elif append_only and size > seal.bytes:
            tail = _tail_problem(path, seal.bytes, cut_tail=cut_tail)
            if tail:
                problems.append(f"{path}: {tail}")
    if files:
        for path in root_files(root):  # an append-only file sealed before it existed: sealed empty
            if path.name not in files and not path.name.endswith(".jsonl"):
                problems.append(f"{path}: not sealed by the manifest (added after the last run)")
    return problems


def _tail_problem(path: Path, start: int, *, cut_tail: bool) -> str | None:
    """What is wrong with the lines appended to a `.jsonl` file after its sealed bytes: each must be a
    whole line holding one JSON object (None: they are)."""
    with path.open("rb") as f:
        f.seek(start)
        tail = f.read()
    *lines, last = tail.split(b"\n")
    for k, line in enumerate(lines):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            return f"line {k + 1} after the sealed bytes is not a JSON record (edited or damaged)"
    if last and cut_tail:
        return (
            f"ends with {len(last)} bytes that are not a whole line (a write cut short, or an edit); "
            "`labeler repair` drops them"
        )
    return None


def write_settings(dataset: str | Path, manifest: Manifest) -> None:
    """settings.json for the manifest's run key (written once per key; the shards' record of how they
    were made, which `labeler repair` trusts over the editable manifest)."""
    from labeler.io import write_text_atomic

    current = read_settings(dataset)
    if current is not None and current.run_key == manifest.run_key:
        return
    settings = RunSettings(
        run_key=manifest.run_key,
        stereo=manifest.stereo,
        masks=manifest.masks,
        classes=manifest.classes,
        calibration=manifest.calibration,
        calibration_sha256=manifest.calibration_sha256,
        depth=manifest.depth,
        objects=manifest.objects,
        samples_per_shard=manifest.layout.samples_per_shard,
    )
    write_text_atomic(Path(dataset) / SETTINGS_NAME, settings.model_dump_json(indent=1))


def read_settings(dataset: str | Path) -> RunSettings | None:
    """settings.json when it is readable and its run key hashes from its fields; else None."""
    from labeler.dataset.runkey import run_key

    path = Path(dataset) / SETTINGS_NAME
    try:
        s = RunSettings.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    if run_key(s.stereo, s.masks, s.calibration_sha256, s.depth, s.samples_per_shard, s.objects) != s.run_key:
        return None
    return s
