"""`labeler repair DATASET [--sources DIR]`: restore what validation names, and only restore.

- The records first: a damaged shard index is rebuilt from the table files, a damaged row plan from its
  readable lines and the samples tables, the manifest from `settings.json` (the settings the shards were
  made with; an edited manifest is never trusted for them).
- Then every shard that fails its checks is rewritten, whole, in the same rows: each sample relabelled
  from its rectified images (found where recorded, else by the same trailing path under the dataset or
  under `--sources DIR`, and only when their sha256 matches the record), or carried over unchanged when
  its sources are gone but its arrays and record pass every check. The rewrite is journalled like any
  other (labeler/dataset/journal.py): a kill leaves the old shard or the new one, never a half.
- A shard with a sample that can be neither relabelled nor carried over is left as it is and reported:
  repair never turns a sample into a failure because its sources moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import LabelTask, Manifest, RunSettings, SampleRecord, ShardEntry, ShardPlan
from labeler.dataset.writer import DatasetWriter
from labeler.errors import InputError
from pipelines.plan import Item, Plan


@dataclass(frozen=True)
class RepairResult:
    manifest: Manifest
    repaired: dict[int, list[str]]  # shard -> the problems that made it be redone
    failed: list[SampleRecord]  # samples relabelled that failed
    rebuilt: list[str] = field(default_factory=list)  # records rebuilt (index, row plan, manifest)
    not_restored: dict[int, str] = field(default_factory=dict)  # shard -> why it was left as it is


def repair_dataset(
    dataset: str | Path,
    *,
    sources: Path | None = None,
    scheduler: str | None = "sync",
    workers: int | None = None,
) -> RepairResult:
    from pipelines.run import execute

    dataset = Path(dataset)
    if sources is not None and not sources.is_dir():
        raise InputError(sources, "not a folder", "pass the folder the rectified images moved to")
    with DatasetWriter(dataset, repairing=True) as writer:  # a half-done rewrite is rolled back first
        settings, index, plan, base, rebuilt = writer.restore_records()
        damaged = writer.changed_table_files(index)  # a table file's bytes: every file hashed once
        for s, entry in sorted(index.items()):
            problems = writer.shard_problems(entry, base)
            if problems:
                damaged[s] = problems + damaged.get(s, [])
        todo: dict[int, list[Item]] = {}
        not_restored: dict[int, str] = {}
        folders: list[Path] | None = None  # where the records say the sources are: found once, if needed
        for s in sorted(damaged):
            if folders is None and _records_lost(writer, index[s]):
                folders = writer.source_folders(index)
            items, why = _items(writer, index[s], plan.get(s), base, sources, folders or [])
            if why:
                not_restored[s] = why
            else:
                todo[s] = items
        if not todo and not rebuilt:
            return RepairResult(base, {}, [], [], not_restored)
        cfg = _config(dataset, settings, scheduler, workers)
        layout = writer.begin(base, [], dict(index))
        rewrites = {s: index[s] for s in todo}
        w, h = settings.calibration.image_size
        execute(
            cfg,
            Plan(todo=todo, done={}, rewrites=rewrites),
            layout,
            settings.run_key,
            settings.depth,
            (w, h),
            writer,
        )
        sealed = writer.finish()
    from labeler.review.gallery import write_gallery

    write_gallery(dataset)
    repaired = {s: damaged[s] for s in todo}
    return RepairResult(sealed, repaired, writer.failures(), rebuilt, not_restored)


def _config(
    dataset: Path, settings: RunSettings, scheduler: str | None, workers: int | None
) -> PseudoLabelConfig:
    return PseudoLabelConfig(
        inputs=dataset,
        calib=dataset,  # unused: repair relabels rectified images only
        out=dataset,
        stereo=settings.stereo,
        masks=settings.masks,
        samples_per_shard=settings.samples_per_shard,
        z_far_m=settings.depth.z_far_m,
        objects=settings.objects,
        scheduler=scheduler,
        workers=workers,
        progress=False,
    )


def _records_lost(writer: DatasetWriter, entry: ShardEntry) -> bool:
    return not writer.shard_contents(entry)[2]


def _items(
    writer: DatasetWriter,
    entry: ShardEntry,
    plan: ShardPlan | None,
    base: Manifest,
    sources: Path | None,
    folders: list[Path],
) -> tuple[list[Item], str]:
    """Every row of a damaged shard, carried over when its record, objects and arrays pass every check,
    else relabelled from its sources; or the reason the shard cannot be restored. A lost or damaged
    table part takes its records' trust with it: the samples are then found by id and relabelled."""
    records, objects, samples_ok = writer.shard_contents(entry)
    by_id = {r.sample_id: r for r in records}
    ids = plan.sample_ids if plan is not None else [r.sample_id for r in sorted(records, key=lambda r: r.row)]
    start = plan.row_start if plan is not None else entry.row_start
    items: list[Item] = []
    for k, sid in enumerate(ids):
        row, rec = start + k, by_id.get(sid)
        trusted = rec if samples_ok and rec is not None and rec.row == row else None
        if trusted is not None and trusted.status == "failed":
            items.append(Item(sid, row, failed=trusted))
            continue
        mine = objects.get(row, []) if objects is not None else []
        if trusted is not None and objects is not None and not writer.sample_problems(trusted, mine, base):
            items.append(Item(sid, row, keep=trusted, keep_objects=tuple(mine)))
            continue
        src = writer.find_sources(sid, row, rec, sources, folders)
        if src is not None:
            items.append(Item(sid, row, task=LabelTask(sample_id=sid, row=row, **src)))
        else:
            hint = "pass --sources DIR (the folder they moved to)"
            return [], f"sample {sid}: damaged and its rectified images are not found; {hint}"
    return items, ""
