"""`labeler migrate DATASET`: convert a v1 dataset (one manifest listing every sample and object) to
layout v2 in place. The arrays stay where they are (the Zarr layout is the same); the samples and objects
move into Parquet tables per shard, the shard index and row plan are written, and the old manifest is kept
beside the new one as `manifest.v1.json`. Re-running after a kill finishes the job.
"""

from __future__ import annotations

from pathlib import Path

from data_schema.manifest import Manifest, ObjectPolicy, ObjectRow, SampleRecord, ShardEntry, ShardPlan
from data_schema.manifest_v1 import ManifestV1
from labeler.dataset import shards
from labeler.dataset.index import (
    ROW_PLAN_NAME,
    SHARD_INDEX_NAME,
    append_row_plan,
    dataset_version,
    index_counts,
    rewrite_shard_index,
    shard_index_bytes,
)
from labeler.dataset.manifest import (
    dataset_lock,
    load_manifest,
    manifest_path,
    manifest_schema_version,
    write_manifest,
)
from labeler.dataset.runkey import run_key as make_run_key
from labeler.dataset.seal import seal_root_files, write_settings
from labeler.dataset.tables import content_sha256, write_shard_tables
from labeler.errors import InputError


def migrate_dataset(dataset: str | Path) -> Manifest:
    """Convert in place; returns the v2 manifest. A v2 or v3 dataset is left as it is."""
    dataset = Path(dataset)
    old_path = dataset / "manifest.v1.json"
    if not dataset.is_dir():
        raise InputError(dataset, "no such dataset folder", "point at a dataset folder")
    with dataset_lock(dataset):
        version = manifest_schema_version(dataset)
        if version is not None and version >= 2:
            return load_manifest(dataset)
        if version is None and old_path.is_file() and (dataset / SHARD_INDEX_NAME).is_file():
            # migrated before: converting manifest.v1.json again would drop every capture appended since
            raise InputError(
                manifest_path(dataset),
                "damaged, in a dataset already migrated to layout v2",
                f"run `labeler repair {dataset}` (it rebuilds the manifest from settings.json)",
            )
        source = old_path if version is None and old_path.is_file() else manifest_path(dataset)
        if not source.is_file():
            raise InputError(dataset, "no manifest to migrate", "point at a dataset folder")
        try:
            v1 = ManifestV1.model_validate_json(source.read_text())
        except ValueError as err:
            raise InputError(source, f"not a v1 manifest ({' '.join(str(err).split())[:200]})", "") from None
        if source != old_path:
            from labeler.io import write_text_atomic

            write_text_atomic(old_path, source.read_text())  # kept: the conversion never loses the original
        per = v1.layout.samples_per_shard
        by_shard: dict[int, list] = {}
        for s in v1.samples:
            if s.index is not None:
                by_shard.setdefault(s.index // per, []).append(s)
        # v1 kept every mask as an object: the policy that says so, in the v2 run key
        policy = ObjectPolicy(min_area_px=1, min_valid_fraction=0.0, min_depth_px=1)
        run_key = make_run_key(v1.stereo, v1.masks, v1.calibration_sha256, v1.depth, per, policy)
        plans, entries = [], {}
        for shard in sorted(by_shard):
            recs = sorted(by_shard[shard], key=lambda s: s.index)
            plans.append(
                ShardPlan(shard=shard, row_start=shard * per, sample_ids=[s.sample_id for s in recs])
            )
            samples = [
                SampleRecord(
                    sample_id=s.sample_id,
                    row=s.index,
                    status=s.status,
                    error=s.error,
                    source=s.source,
                    digests=s.digests,
                    stats=s.stats,
                    seconds=s.seconds,
                )
                for s in recs
            ]
            objects = [
                ObjectRow(sample_id=s.sample_id, row=s.index, **o.model_dump(exclude={"rle"}))
                for s in recs
                for o in s.objects
            ]
            s_ref, o_ref = write_shard_tables(dataset, shard, samples, objects)
            n_ok = sum(s.status == "ok" for s in samples)
            entries[shard] = ShardEntry(
                shard=shard,
                row_start=shard * per,
                row_stop=(shard + 1) * per,
                run_key=run_key,
                n_ok=n_ok,
                n_failed=len(samples) - n_ok,
                n_objects=len(objects),
                samples=s_ref,
                objects=o_ref,
                content_sha256=content_sha256(samples, objects),
                array_bytes=shards.shard_file_sizes(dataset, shard),
            )
        (dataset / ROW_PLAN_NAME).unlink(missing_ok=True)
        append_row_plan(dataset, plans)
        rewrite_shard_index(dataset, entries)
        manifest = Manifest(
            dataset_version=dataset_version(run_key, entries),
            labeler_version=v1.labeler_version,
            calibration=v1.calibration,
            calibration_sha256=v1.calibration_sha256,
            depth=v1.depth,
            stereo=v1.stereo,
            masks=v1.masks,
            run_key=run_key,
            objects=policy,
            library_versions=v1.library_versions,
            layout=v1.layout,
            counts=index_counts(entries),
            shard_index_bytes=shard_index_bytes(dataset),
        )
        write_settings(dataset, manifest)
        manifest = write_manifest(dataset, manifest.model_copy(update={"files": seal_root_files(dataset)}))
    return manifest
