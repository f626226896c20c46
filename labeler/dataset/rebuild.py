"""Rebuilding a dataset's records from what is intact, for `labeler repair`: the shard index from the table
files and the arrays, the row plan from its readable lines and the samples tables, the manifest from
`settings.json` (labeler/dataset/seal.py). Nothing here deletes a file.
"""

from __future__ import annotations

from pathlib import Path

from data_schema.manifest import Manifest, RunSettings, ShardEntry, ShardPlan, TableRef
from labeler.dataset.index import ROW_PLAN_NAME, read_row_plan, read_shard_index, rewrite_shard_index
from labeler.dataset.manifest import load_manifest
from labeler.dataset.seal import read_settings
from labeler.dataset.shards import shard_file_sizes
from labeler.dataset.tables import (
    content_sha256,
    object_from_row,
    rows_sha256,
    sample_from_row,
    table_dir,
)
from labeler.errors import InputError
from labeler.io import sha256_file, write_text_atomic


def trusted_settings(dataset: Path) -> RunSettings:
    """The settings the shards were made with: settings.json (its run key hashes from its fields), or,
    for a dataset older than settings.json, the manifest when its configs hash to its run key."""
    from labeler.dataset.runkey import run_key

    found = read_settings(dataset)
    if found is not None:
        return found
    try:
        m = load_manifest(dataset)
    except InputError:
        m = None
    if m is not None:
        key = run_key(m.stereo, m.masks, m.calibration_sha256, m.depth, m.layout.samples_per_shard, m.objects)
        if key == m.run_key:
            return RunSettings(
                run_key=m.run_key,
                stereo=m.stereo,
                masks=m.masks,
                classes=m.classes,
                calibration=m.calibration,
                calibration_sha256=m.calibration_sha256,
                depth=m.depth,
                objects=m.objects,
                samples_per_shard=m.layout.samples_per_shard,
            )
    raise InputError(
        dataset / "settings.json",
        "no trustworthy record of the settings the shards were made with (settings.json damaged and the "
        "manifest's configs do not hash to its run key)",
        "restore settings.json from a backup, or label the sources again into a new --out",
    )


def _candidates(dataset: Path, per_shard: int, run_key: str) -> dict[int, list[ShardEntry]]:
    """Every shard's rows found in the table files (one row group per shard and file)."""
    import pyarrow.parquet as pq

    found: dict[int, list[ShardEntry]] = {}
    base = table_dir(dataset, "samples")
    for path in sorted(base.glob("*.parquet")) if base.is_dir() else []:
        other = table_dir(dataset, "objects") / path.name
        try:
            file_sha = {"samples": sha256_file(path), "objects": sha256_file(other)}
            with pq.ParquetFile(path) as fs, pq.ParquetFile(other) as fo:
                n = fs.metadata.num_row_groups
                if fo.metadata.num_row_groups != n:
                    continue
                for g in range(n):
                    samples = [sample_from_row(r) for r in fs.read_row_group(g).to_pylist()]
                    objects = [object_from_row(r) for r in fo.read_row_group(g).to_pylist()]
                    if not samples:
                        continue
                    shard = samples[0].row // per_shard
                    n_ok = sum(s.status == "ok" for s in samples)
                    n_skip = sum(s.status == "skipped" for s in samples)
                    found.setdefault(shard, []).append(
                        ShardEntry(
                            shard=shard,
                            row_start=shard * per_shard,
                            row_stop=(shard + 1) * per_shard,
                            run_key=run_key,
                            n_ok=n_ok,
                            n_failed=len(samples) - n_ok - n_skip,
                            n_skipped=n_skip,
                            n_objects=len(objects),
                            samples=TableRef(
                                file=path.name,
                                row_group=g,
                                n_rows=len(samples),
                                sha256=rows_sha256(samples),
                                file_sha256=file_sha["samples"],
                            ),
                            objects=TableRef(
                                file=path.name,
                                row_group=g,
                                n_rows=len(objects),
                                sha256=rows_sha256(objects),
                                file_sha256=file_sha["objects"],
                            ),
                            content_sha256=content_sha256(samples, objects),
                            array_bytes=shard_file_sizes(dataset, shard),
                        )
                    )
        except (OSError, ValueError):
            continue  # an unreadable file: its shards come from another file or are relabelled
    return found


def rebuild_shard_index(dataset: Path, settings: RunSettings) -> dict[int, ShardEntry]:
    """The shard index rebuilt from the table files: for each shard, the entry the damaged index still
    holds when its rows are found, else the candidate whose samples' digests match the arrays (the
    newest file first). Written atomically; returns it."""
    from labeler.dataset.manifest import manifest_path
    from labeler.dataset.validate import shard_problems

    old = read_shard_index(dataset)
    found = _candidates(dataset, settings.samples_per_shard, settings.run_key)
    try:
        manifest: Manifest | None = load_manifest(dataset)
    except InputError:
        manifest = None
    entries: dict[int, ShardEntry] = {}
    for shard, options in sorted(found.items()):
        keep = old.get(shard)  # the damaged index's entry, when the files agree with all of it
        if keep is not None and any(  # what the table files cannot say: from the entry, when all else agrees
            o.model_copy(update={"rectified": keep.rectified, "array_sha256": keep.array_sha256}) == keep
            for o in options
        ):
            entries[shard] = keep
            continue
        options.sort(key=lambda e: (table_dir(dataset, "samples") / e.samples.file).stat().st_mtime_ns)
        chosen = options[-1]
        if manifest is not None and manifest_path(dataset).is_file():
            for o in reversed(options):
                if not shard_problems(dataset, o, manifest):
                    chosen = o
                    break
        entries[shard] = chosen
    rewrite_shard_index(dataset, entries)
    return entries


def rebuild_row_plan(dataset: Path, entries: dict[int, ShardEntry]) -> dict[int, ShardPlan]:
    """The row plan from its readable lines, and for finished shards whose line was lost, from their
    samples table. Written atomically; returns it."""
    from labeler.dataset.tables import shard_samples

    plans = read_row_plan(dataset)
    for shard, e in entries.items():
        try:
            samples = sorted(shard_samples(dataset, e), key=lambda r: r.row)
        except (OSError, ValueError):
            continue
        ids = [s.sample_id for s in samples]
        if shard not in plans or plans[shard].sample_ids[: len(ids)] != ids:
            plans[shard] = ShardPlan(shard=shard, row_start=e.row_start, sample_ids=ids)
    text = "".join(plans[s].model_dump_json() + "\n" for s in sorted(plans))
    write_text_atomic(Path(dataset) / ROW_PLAN_NAME, text)
    return plans


__all__ = ["rebuild_row_plan", "rebuild_shard_index", "trusted_settings"]
