"""`labeler repair DATASET`: rewrite every shard that fails validation, whole, from its samples' sources.

A damaged shard (a truncated or replaced array file, an edited table, arrays that fail their digests) is
relabelled from the rectified images its samples record (paths and sha256 in the samples table), with the
dataset's own backend configs and depth settings, in the same rows; a sample whose source is gone or
changed becomes a recorded failure. Its old array files are removed first, so the writer never reads a
damaged shard. Shards that pass are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import LabelTask, Manifest, SampleRecord, ShardEntry
from labeler.dataset.validate import shard_problems
from labeler.dataset.writer import DatasetWriter
from pipelines.plan import Item, Plan


@dataclass(frozen=True)
class RepairResult:
    manifest: Manifest
    repaired: dict[int, list[str]]  # shard -> the problems that made it be redone
    failed: list[SampleRecord]  # samples that could not be relabelled


def repair_dataset(
    dataset: str | Path, *, scheduler: str | None = "sync", workers: int | None = None
) -> RepairResult:
    from pipelines.run import execute

    dataset = Path(dataset)
    with DatasetWriter(dataset) as writer:  # a rewrite a killed process left half-done is rolled back first
        manifest = writer.manifest()
        index = writer.committed()
        plan = writer.row_plan()
        damaged: dict[int, list[str]] = {}
        for s in sorted(plan):
            entry = index.get(s)
            problems = ["not finished"] if entry is None else shard_problems(dataset, entry, manifest)
            if entry is not None and problems:
                damaged[s] = problems
        if not damaged:
            return RepairResult(manifest, {}, [])
        todo = {s: _items(writer, index[s], plan[s].row_start, plan[s].sample_ids) for s in damaged}
        cfg = PseudoLabelConfig(
            inputs=dataset,
            calib=dataset,  # unused: repair relabels rectified images only
            out=dataset,
            stereo=manifest.stereo,
            masks=manifest.masks,
            samples_per_shard=manifest.layout.samples_per_shard,
            scheduler=scheduler,
            workers=workers,
            progress=False,
        )
        entries = {s: e for s, e in index.items() if s not in damaged}
        layout = writer.begin(manifest, [], entries, discard=sorted(damaged))
        w, h = manifest.calibration.image_size
        execute(cfg, Plan(todo=todo, done=entries), layout, manifest.run_key, manifest.depth, (w, h), writer)
        sealed = writer.finish()
    from labeler.review.gallery import write_gallery

    write_gallery(dataset)
    return RepairResult(sealed, damaged, writer.failures())


def _items(writer: DatasetWriter, entry: ShardEntry, row_start: int, planned: list[str]) -> list[Item]:
    """Every planned sample of the shard: relabelled from its recorded source (the same graph as
    labelling), or its failure kept."""
    try:
        records = {r.sample_id: r for r in writer.shard_records(entry)}
    except Exception:  # noqa: BLE001 — an unreadable table: nothing is known of its samples
        records = {}
    items = []
    for k, sid in enumerate(planned):
        row, rec = row_start + k, records.get(sid)
        if rec is not None and rec.source is not None:
            task = LabelTask(
                sample_id=sid,
                row=row,
                left_path=rec.source.left_path,
                right_path=rec.source.right_path,
                left_sha256=rec.source.left_sha256,
                right_sha256=rec.source.right_sha256,
            )
            items.append(Item(sid, row, task=task))
        elif rec is not None:
            items.append(Item(sid, row, failed=rec))
        else:
            items.append(
                Item(
                    sid,
                    row,
                    failed=SampleRecord(
                        sample_id=sid,
                        row=row,
                        status="failed",
                        error="repair: its record was lost with the shard's table; relabel it with "
                        "`labeler pseudo-label … --retry-failed`",
                    ),
                )
            )
    return items
