"""Running a pseudo-label job: lock the dataset, plan, execute the graph, commit shards as they finish.

A shard is committed by appending its entry to the shard index (O(entry)); the manifest is written at the
start and the end of a run only, and small table files are compacted every COMPACT_MIN_FILES shards. A
kill at any moment leaves a dataset that opens, validates, and resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from data_schema.backends import mask_classes
from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedPair
from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import Manifest, SampleRecord, ShardEntry
from labeler.dataset import shards
from labeler.dataset.index import (
    append_row_plan,
    append_shard_entries,
    dataset_version,
    index_counts,
    read_shard_index,
    rewrite_shard_index,
    shard_index_bytes,
)
from labeler.dataset.manifest import dataset_lock, load_manifest, manifest_schema_version, write_manifest
from labeler.dataset.runkey import run_key
from labeler.dataset.tables import (
    COMPACT_MIN_FILES,
    compact_tables,
    remove_unreferenced_tables,
    shard_samples,
)
from labeler.errors import InputError, LabelerError, disk_error
from pipelines.graph import build_graph
from pipelines.plan import plan_run

LIBRARIES = (
    "labeler",
    "numpy",
    "opencv-contrib-python-headless",
    "zarr",
    "pyarrow",
    "dask",
    "distributed",
    "torch",
    "scikit-image",
    "sam2",
    "timm",
)
_FAILURES_SHOWN = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelRun:
    """What a run did: the dataset record after it, and this run's own work."""

    manifest: Manifest
    labelled: int  # samples labelled by this run (ok or failed)
    skipped: int  # inputs already labelled before
    new_failures: list[SampleRecord]  # this run's first failures (n_new_failed in all)
    n_new_failed: int
    relabelled_changed: list[str]  # labelled again: their rectified images changed since the last run

    @property
    def dataset_version(self) -> str:
        return self.manifest.dataset_version


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def seal_manifest(out: Path, base: Manifest, entries: dict[int, ShardEntry]) -> Manifest:
    """The dataset record for the current shard index (version, counts, index size)."""
    manifest = base.model_copy(
        update={
            "dataset_version": dataset_version(base.run_key, entries),
            "counts": index_counts(entries),
            "shard_index_bytes": shard_index_bytes(out),
        }
    )
    write_manifest(out, manifest)
    return manifest


def run_pseudo_label(cfg: PseudoLabelConfig) -> LabelRun:
    """Label every pair under cfg.inputs into cfg.out (resuming and appending to earlier runs)."""
    from labeler.depth import depth_settings
    from labeler.io import sha256_file
    from labeler.rig.calibration import load_calibration

    _check_gpus(cfg)
    if cfg.out.resolve() == cfg.inputs.resolve():
        raise InputError(cfg.out, "is also the input folder", "write the dataset to another --out")
    calib = load_calibration(cfg.calib)
    calib_sha = sha256_file(cfg.calib)
    settings = depth_settings(calib, z_far_m=cfg.z_far_m)
    key = run_key(cfg.stereo, cfg.masks, calib_sha, settings, cfg.samples_per_shard, cfg.objects)
    _check_backends(cfg)
    _check_out(cfg.out)
    _check_scheduler(cfg.scheduler)
    with dataset_lock(cfg.out):
        from labeler.dataset import journal

        rolled = journal.recover(cfg.out)  # a rewrite a killed process left half-done
        if rolled:
            log.warning("rolled back the interrupted rewrite of shard(s) %s", ", ".join(map(str, rolled)))
        _refuse_other_settings(cfg.out, key)
        plan = plan_run(cfg, key, calib_sha256=calib_sha)
        if not plan.n_inputs and not plan.done:
            raise InputError(cfg.inputs, "no pairs to label", "check the folder")
        w, h = calib.image_size
        layout = shards.store_layout(plan.n_rows, h, w, cfg.samples_per_shard)
        base = Manifest(
            dataset_version=key,
            labeler_version=metadata.version("labeler"),
            calibration=calib,
            calibration_sha256=calib_sha,
            depth=settings,
            stereo=cfg.stereo,
            masks=cfg.masks,
            classes=mask_classes(cfg.masks),
            run_key=key,
            objects=cfg.objects,
            library_versions=library_versions(),
            layout=layout,
        )
        layout = shards.prepare_store(cfg.out, layout)
        append_row_plan(cfg.out, plan.new_rows)
        # the shards being rewritten keep their committed entries until their rewrites commit
        entries = {**{s: e for s, e in plan.rewrites.items() if e.run_key == key}, **plan.done}
        seal_manifest(cfg.out, base, entries)
        finished = _execute(cfg, plan, layout, key, settings, (w, h), entries)
        entries = _compact(cfg.out, entries, force=True)
        manifest = seal_manifest(cfg.out, base, entries)
        if cfg.rectify:
            _write_pairs_json(cfg, calib, calib_sha, [p for e in entries.values() for p in e.rectified])
        from labeler.review.gallery import write_gallery

        write_gallery(cfg.out)
    fails = [r for e in finished for r in shard_samples(cfg.out, e) if r.status == "failed"]
    new_ids = {it.sample_id for items in plan.todo.values() for it in items if it.keep is None}
    fails = [r for r in fails if r.sample_id in new_ids]
    return LabelRun(
        manifest=manifest,
        labelled=plan.n_todo,
        skipped=plan.n_inputs - plan.n_todo,
        new_failures=fails[:_FAILURES_SHOWN],
        n_new_failed=len(fails),
        relabelled_changed=plan.stale,
    )


def _execute(
    cfg: PseudoLabelConfig,
    plan: Any,
    layout: Any,
    key: str,
    settings: Any,
    size: tuple[int, int],
    entries: dict[int, ShardEntry],
) -> list[ShardEntry]:
    """Run the graph; commit each shard as it finishes (entries is updated in place)."""
    import dask
    from tqdm import tqdm

    from labeler.dataset import journal
    from pipelines.cluster import dask_client

    rewrites = {s: e.content_sha256 for s, e in plan.rewrites.items()}
    writes = build_graph(cfg, plan.todo, layout, key, settings, size, rewrites)
    finished: list[ShardEntry] = []
    since_compaction = 0

    def commit(entry: ShardEntry) -> None:
        nonlocal since_compaction
        append_shard_entries(cfg.out, [entry])
        journal.end(cfg.out, entry.shard)  # committed: the old files are no longer needed
        entries[entry.shard] = entry
        finished.append(entry)
        since_compaction += 1
        if since_compaction >= COMPACT_MIN_FILES:
            entries.update(_compact(cfg.out, entries))
            since_compaction = 0

    if not writes:
        return finished
    with (
        dask_client(cfg.scheduler, workers=cfg.workers, gpus=cfg.gpus, samples=plan.n_todo) as client,
        tqdm(total=plan.n_todo, desc="pseudo-label", unit="sample", disable=not cfg.progress) as bar,
    ):
        todo_of = {
            s: sum(1 for it in items if it.keep is None and it.failed is None)
            for s, items in plan.todo.items()
        }
        if client is None:
            for shard, delayed_write in writes.items():
                try:
                    (entry,) = dask.compute(delayed_write, scheduler="sync")
                except Exception as err:  # noqa: BLE001 — the shard's failure, not the run's
                    entry = _failed_shard(cfg, shard, plan.todo[shard], layout, key, err)
                if entry is not None:
                    commit(entry)
                bar.update(todo_of[shard])
        else:
            from distributed import as_completed

            futures = client.compute(list(writes.values()))
            shard_of = {f.key: s for f, s in zip(futures, writes, strict=True)}
            for fut in as_completed(futures):
                shard = shard_of[fut.key]
                try:
                    entry = fut.result()
                except Exception as err:  # noqa: BLE001 — e.g. KilledWorker: this shard fails, the run goes on
                    entry = _failed_shard(cfg, shard, plan.todo[shard], layout, key, err)
                if entry is not None:
                    commit(entry)
                bar.update(todo_of[shard])
    return finished


def _failed_shard(
    cfg: PseudoLabelConfig, shard: int, items: list[Any], layout: Any, key: str, err: BaseException
) -> ShardEntry | None:
    """A shard whose task died (a worker killed repeatedly, an error outside any sample): its samples are
    recorded as failed with the reason. A disk or permission error stops the run in one line instead, and
    a shard that carries finished samples is left for the next run rather than lose them."""
    from labeler.dataset import journal
    from labeler.stages import StageFailure, write_stage

    journal.roll_back(cfg.out, shard)  # a rewrite that failed half-way: its committed files come back
    if isinstance(err, OSError):
        line = disk_error(err, cfg.out, f"shard {shard}")
        text = " ".join(str(err).split())
        raise line or LabelerError(f"{cfg.out}: cannot write shard {shard} ({text})") from None
    if any(it.keep is not None for it in items):
        log.warning("shard %s not written this run (%s); the next run retries it", shard, type(err).__name__)
        return None
    text = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    fails = [StageFailure(it.sample_id, it.row, "shard", text) for it in items]
    return write_stage(cfg.out, shard, layout, key, list(fails), previews=False)


def _compact(out: Path, entries: dict[int, ShardEntry], *, force: bool = False) -> dict[int, ShardEntry]:
    """Merge small table files when enough have piled up; at the end of a run also drop stale files and
    rewrite the shard index to its current entries when old lines outnumber them."""
    new = compact_tables(out, entries)
    if new:
        append_shard_entries(out, new)
        entries = {**entries, **{e.shard: e for e in new}}
        remove_unreferenced_tables(out, entries)
    if force:
        remove_unreferenced_tables(out, entries)
        if shard_index_bytes(out) > 2 * sum(len(e.model_dump_json()) + 1 for e in entries.values()):
            rewrite_shard_index(out, entries)
    return entries


def _check_backends(cfg: PseudoLabelConfig) -> None:
    """Weights, configs: a mistake is one line before the first sample, not one failure per sample."""
    import labeler.segment
    import labeler.stereo  # noqa: F401 — registers the backends
    from labeler.segment.base import MASK_BACKENDS
    from labeler.stereo.base import STEREO_BACKENDS

    STEREO_BACKENDS.check(cfg.stereo)
    MASK_BACKENDS.check(cfg.masks)


def _check_out(out: Path) -> None:
    """--out must be a folder this process can write (before any work: one line, not a traceback)."""
    from labeler.io import write_text_atomic

    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file, not a dataset folder", "pass a folder to --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / ".write-test", "")
        (out / ".write-test").unlink()
    except OSError as err:
        raise InputError(out, f"cannot write here ({err.strerror or err})", "pass a writable --out") from None


def _check_scheduler(scheduler: str | None) -> None:
    """An unreachable --scheduler is one line, before a store is created."""
    if not scheduler or "://" not in scheduler:
        return
    from distributed import Client

    try:
        Client(scheduler, timeout=10).close()
    except (OSError, TimeoutError) as err:
        raise LabelerError(
            f"--scheduler {scheduler}: no Dask scheduler answers there ({type(err).__name__}); start one "
            "(`dask scheduler`) or drop --scheduler to run a local cluster"
        ) from None


def _check_gpus(cfg: PseudoLabelConfig) -> None:
    """--gpu on a local cluster needs those devices here (an external cluster's workers have their own)."""
    if not cfg.gpus or (cfg.scheduler and "://" in cfg.scheduler):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in cfg.gpus if g >= n]
    if missing:
        raise LabelerError(
            f"--gpu {','.join(map(str, cfg.gpus))}: CUDA device {missing[0]} not found "
            f"({n} visible); drop --gpu to run on the CPU, or name a visible device"
        )


def _refuse_other_settings(out: Path, key: str) -> None:
    """A dataset folder holds one set of labels: other backends or calibration need another --out."""
    if manifest_schema_version(out) == 1:
        load_manifest(out)  # raises the one line naming `labeler migrate`
    index = read_shard_index(out)
    other = {e.run_key for e in index.values()} - {key}
    if other and any(e.n_ok for e in index.values()):
        try:
            old: Manifest | None = load_manifest(out)
        except InputError:
            old = None
        what = (
            f"stereo {old.stereo.name}, masks {old.masks.name}, calibration {old.calibration.rig}"
            if old
            else "another run key"
        )
        raise InputError(
            out, f"holds a dataset made with other settings ({what}, or other parameters)", "use a new --out"
        )


def _write_pairs_json(
    cfg: PseudoLabelConfig, calib: StereoCalibration, calib_sha: str, pairs: list[RectifiedPair]
) -> None:
    """OUT/rectified/pairs.json for `labeler run`, from every finished shard's record."""
    from data_schema.captures import RectifiedSet
    from labeler.io import write_text_atomic

    rect = RectifiedSet(
        calib_path=str(cfg.calib),
        calib_sha256=calib_sha,
        rig=calib.rig,
        image_size=list(calib.image_size),
        pairs=sorted(pairs, key=lambda p: p.pair_id),
    )
    write_text_atomic(cfg.out / "rectified" / "pairs.json", rect.model_dump_json(indent=2))
