"""Planning a pseudo-label run: which inputs there are, which row each sample owns, which shards are done.

What is finished is decided from the row plan, the shard index, the samples table and cheap store checks
(files present with their recorded sizes) — never by re-reading arrays; content is `labeler validate`'s job.
New samples start at a fresh shard, so appending never rewrites a finished shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_schema.captures import RectifiedPair, StereoPairSource
from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import LabelTask, ObjectRow, SampleRecord, ShardEntry, ShardPlan
from labeler.dataset.writer import DatasetWriter, StoredSample
from labeler.errors import InputError
from labeler.stages import StageFailure


@dataclass(frozen=True)
class Item:
    """One row of a shard to write: a pair to label (task, or raw to rectify first), a known failure, or
    a finished sample carried over from the store unchanged (when its shard is rewritten)."""

    sample_id: str
    row: int
    task: LabelTask | None = None
    raw: StereoPairSource | None = None
    failed: SampleRecord | None = None
    keep: SampleRecord | None = None
    keep_objects: tuple[ObjectRow, ...] = ()


@dataclass(frozen=True)
class Plan:
    todo: dict[int, list[Item]]  # shards to write, each with every row it will hold
    done: dict[int, ShardEntry]  # finished shards, kept as they are
    new_rows: list[ShardPlan] = field(default_factory=list)  # to record before labelling
    n_rows: int = 0  # rows the store needs
    n_inputs: int = 0
    stale: list[str] = field(default_factory=list)  # labelled before from images that have changed since
    # shards to write that have a committed entry: rewritten under a journal, that entry in force until then
    rewrites: dict[int, ShardEntry] = field(default_factory=dict)

    @property
    def n_todo(self) -> int:
        return sum(1 for items in self.todo.values() for it in items if it.keep is None and it.failed is None)


Input = LabelTask | StereoPairSource | SampleRecord


def discover_inputs(cfg: PseudoLabelConfig, *, calib_sha256: str | None = None) -> dict[str, Input]:
    """Raw sources (run) or rectified tasks (pseudo-label), and pairs rectify already failed, by id.
    A rectified folder made with another calibration than `calib_sha256` is refused."""
    from labeler.rig.captures import discover_pairs
    from labeler.rig.rectify import load_rectified_set

    found: list[Input] = []
    orphans: list[tuple[StereoPairSource, str]] = []  # a frame without its partner fails alone
    if cfg.rectify:
        found += discover_pairs(cfg.inputs, layout=cfg.layout, stride=cfg.stride, orphans=orphans)
    elif not (cfg.inputs / "pairs.json").is_file():
        if not (cfg.inputs / "left").is_dir():
            raise InputError(
                cfg.inputs,
                "neither pairs.json nor left/ + right/ folders",
                "run `labeler rectify` first, or pass raw captures to `labeler run`",
            )
        # a user's own rectified pairs: left/<id>.png + right/<id>.png
        found += [
            LabelTask(sample_id=s.pair_id, row=0, left_path=s.left_path, right_path=str(s.right_path))
            for s in discover_pairs(cfg.inputs, layout="pairs", orphans=orphans)
        ]
    else:
        rect = load_rectified_set(cfg.inputs)
        if calib_sha256 is not None and rect.calib_sha256 != calib_sha256:
            raise InputError(
                cfg.inputs / "pairs.json",
                f"rectified with rig {rect.rig!r}'s calibration {rect.calib_path} (sha256 "
                f"{rect.calib_sha256[:12]}), not with {cfg.calib} ({calib_sha256[:12]})",
                "label it with the calibration that rectified it, or rectify the captures again with this",
            )
        for p in rect.pairs:
            if p.status == "ok":
                found.append(task_from_rectified(p, 0, cfg.inputs))
            elif p.status == "skipped" and not cfg.keep_duplicates:
                found.append(_skipped(p.source, p.duplicate_of or ""))
            elif p.status == "skipped":
                continue  # --keep-duplicates: `labeler run` never rectified it; label it with `run`
            else:
                found.append(StageFailure.of(p.source, 0, "rectify", p.error or "failed").record())
    found += [StageFailure.of(src, 0, "discover", problem).record() for src, problem in orphans]
    out: dict[str, Input] = {}
    for inp in found:
        out.setdefault(_id(inp), inp)
    return out


def _id(inp: Input) -> str:
    return inp.pair_id if isinstance(inp, StereoPairSource) else inp.sample_id


def _skipped(src: StereoPairSource, duplicate_of: str) -> SampleRecord:
    return SampleRecord(
        sample_id=src.pair_id,
        row=0,
        status="skipped",
        duplicate_of=duplicate_of,
        sequence=src.sequence,
        frame_index=src.frame_index,
        timestamp_s=src.timestamp_s,
    )


def _order(sid: str, inp: Input) -> tuple[str, int, str]:
    """Row order of new samples: a sequence's frames together and in time order (so shards, and the
    tasks that write them, follow sequences), lone captures by id."""
    seq, frame = inp.sequence, inp.frame_index
    return (seq or "", frame if seq is not None and frame is not None else -1, sid)


def task_from_rectified(pair: RectifiedPair, row: int, folder: Path) -> LabelTask:
    if pair.status != "ok" or pair.left_path is None or pair.right_path is None:
        raise InputError(pair.source.left_path, f"rectify failed: {pair.error}", "fix or remove the capture")
    return LabelTask(
        sample_id=pair.pair_id,
        row=row,
        left_path=str(folder / pair.left_path),
        right_path=str(folder / pair.right_path),
        left_sha256=pair.left_sha256,
        right_sha256=pair.right_sha256,
        sequence=pair.source.sequence,
        frame_index=pair.source.frame_index if pair.source.sequence is not None else None,
        timestamp_s=pair.source.timestamp_s,
    )


def _item(sid: str, row: int, inp: Input) -> Item:
    if isinstance(inp, LabelTask):
        return Item(sid, row, task=inp.model_copy(update={"row": row}))
    if isinstance(inp, StereoPairSource):
        return Item(sid, row, raw=inp)
    return Item(sid, row, failed=inp.model_copy(update={"row": row}))


def plan_run(
    cfg: PseudoLabelConfig, key: str, writer: DatasetWriter, *, calib_sha256: str | None = None
) -> Plan:
    """Rows for every input (known ids keep theirs) and the shards that need writing."""
    inputs = discover_inputs(cfg, calib_sha256=calib_sha256)
    per_shard = cfg.samples_per_shard
    row_plan = writer.row_plan()
    committed = writer.committed()
    intact = writer.intact_entries(committed, row_plan, key)
    stored = writer.stored_samples(list(intact.values()))
    todo: dict[int, list[Item]] = {}
    done: dict[int, ShardEntry] = {}
    planned: set[str] = set()
    stale: set[str] = set()
    for shard, sp in sorted(row_plan.items()):
        planned.update(sp.sample_ids)
        entry = intact.get(shard)
        have = stored.get(shard, {})
        changed = _changed(have, inputs)
        stale.update(changed)
        if entry is not None and not changed and not _needs_rewrite(sp, have, inputs, cfg):
            done[shard] = entry
            continue
        full = {r.sample_id: r for r in writer.shard_records(entry)} if entry is not None else {}
        keep_objects = writer.shard_objects_by_row(entry) if entry is not None else {}
        items = []
        for pos, sid in enumerate(sp.sample_ids):
            row, rec = sp.row_start + pos, full.get(sid)
            retry = rec is not None and (
                (rec.status == "failed" and cfg.retry_failed)
                or (rec.status == "skipped" and cfg.keep_duplicates)
            )
            if sid in changed:  # its rectified images changed since it was labelled: label it again
                items.append(_item(sid, row, inputs[sid]))
            elif rec is not None and rec.status == "ok":
                items.append(Item(sid, row, keep=rec, keep_objects=tuple(keep_objects.get(row, ()))))
            elif sid in inputs and (rec is None or retry):
                items.append(_item(sid, row, inputs[sid]))
            elif rec is not None:
                items.append(Item(sid, row, failed=rec))
        if items:
            todo[shard] = items
    next_shard = max(row_plan, default=-1) + 1
    new_ids = sorted((sid for sid in inputs if sid not in planned), key=lambda sid: _order(sid, inputs[sid]))
    new_rows = []
    for k in range(0, len(new_ids), per_shard):
        shard = next_shard + k // per_shard
        sp = ShardPlan(shard=shard, row_start=shard * per_shard, sample_ids=new_ids[k : k + per_shard])
        new_rows.append(sp)
        todo[shard] = [_item(sid, sp.row_start + i, inputs[sid]) for i, sid in enumerate(sp.sample_ids)]
    last = max([*row_plan, *(p.shard for p in new_rows)], default=-1)
    all_plans = {**row_plan, **{p.shard: p for p in new_rows}}
    n_rows = all_plans[last].row_start + len(all_plans[last].sample_ids) if last >= 0 else 0
    return Plan(
        todo=todo,
        done=done,
        new_rows=new_rows,
        n_rows=n_rows,
        n_inputs=len(inputs),
        stale=sorted(stale),
        rewrites={s: committed[s] for s in todo if s in committed},
    )


def _changed(have: dict[str, StoredSample], inputs: dict[str, Input]) -> set[str]:
    """Ok samples whose input now records other image hashes than the ones they were labelled from."""
    out = set()
    for sid, st in have.items():
        inp = inputs.get(sid)
        if st.status == "ok" and isinstance(inp, LabelTask) and inp.left_sha256 is not None:
            if (inp.left_sha256, inp.right_sha256) != (st.left_sha256, st.right_sha256):
                out.add(sid)
    return out


def _needs_rewrite(
    sp: ShardPlan, have: dict[str, StoredSample], inputs: dict[str, Input], cfg: PseudoLabelConfig
) -> bool:
    """A finished shard is rewritten only to add planned samples that are now available, or to retry
    failures (--retry-failed) or label skipped still frames (--keep-duplicates) whose inputs are there."""
    for sid in sp.sample_ids:
        rec = have.get(sid)
        if rec is None and sid in inputs:
            return True
        redo = (rec is not None and rec.status == "failed" and cfg.retry_failed) or (
            rec is not None and rec.status == "skipped" and cfg.keep_duplicates
        )
        if redo and isinstance(inputs.get(sid), LabelTask | StereoPairSource):
            return True
    return False
