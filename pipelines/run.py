"""Running a pseudo-label job: lock the dataset, plan, execute the graph, commit shards as they finish.

A shard is committed by appending its entry to the shard index (O(entry)); the manifest is written at the
start and the end of a run only, and small table files are compacted every COMPACT_MIN_FILES shards. A
kill at any moment leaves a dataset that opens, validates, and resumes where it stopped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from data_schema.backends import Sam3Config, mask_classes
from data_schema.captures import RectifiedSet
from data_schema.commands import PseudoLabelConfig
from data_schema.licences import backend_licences
from data_schema.manifest import DepthSettings, Manifest, SampleRecord, ShardEntry, StoreLayout
from labeler.dataset.licences import refuse
from labeler.dataset.manifest import library_versions
from labeler.dataset.runkey import run_key
from labeler.dataset.writer import DatasetWriter, check_writable
from labeler.errors import InputError, LabelerError, disk_error
from pipelines import cluster
from pipelines.graph import build_graph
from pipelines.plan import Item, Plan, plan_run

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
    still_skipped: int = 0  # still frames this run recorded as duplicates (no model time)
    tracks: int | None = None  # --track: tracks in the dataset

    @property
    def dataset_version(self) -> str:
        return self.manifest.dataset_version


def run_pseudo_label(cfg: PseudoLabelConfig) -> LabelRun:
    """Label every pair under cfg.inputs into cfg.out (resuming and appending to earlier runs)."""
    from labeler.depth import depth_settings
    from labeler.io import sha256_file
    from labeler.rig.calibration import load_calibration

    cluster.check_gpus(cfg.gpus, cfg.scheduler)
    cfg = _resolve_sam3_tracking(cfg)
    refuse(f"{cfg.out}", backend_licences(cfg.stereo, cfg.masks), cfg.strict_licence)
    if cfg.out.resolve() == cfg.inputs.resolve():
        raise InputError(cfg.out, "is also the input folder", "write the dataset to another --out")
    calib = load_calibration(cfg.calib)
    calib_sha = sha256_file(cfg.calib)
    settings = depth_settings(calib, z_far_m=cfg.z_far_m)
    tracking = cfg.tracking if cfg.track else None
    key = run_key(cfg.stereo, cfg.masks, calib_sha, settings, cfg.samples_per_shard, cfg.objects, tracking)
    _check_backends(cfg)
    _check_keyframes(cfg)
    check_writable(cfg.out)
    cluster.check_scheduler_answers(cfg.scheduler)
    with DatasetWriter(cfg.out) as writer:
        writer.refuse_other_settings(key)
        _check_tracking(cfg, writer)
        plan = plan_run(cfg, key, writer, calib_sha256=calib_sha)
        if not plan.n_inputs and not plan.done:
            raise InputError(cfg.inputs, "no pairs to label", "check the folder")
        _check_trackable(cfg, plan)
        w, h = calib.image_size
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
            layout=writer.layout(plan.n_rows, h, w, cfg.samples_per_shard),
            licences=backend_licences(cfg.stereo, cfg.masks),
            tracking=tracking,  # from the start: a run killed before its track pass is known as tracked
        )
        # the shards being rewritten keep their committed entries until their rewrites commit
        kept = {**{s: e for s, e in plan.rewrites.items() if e.run_key == key}, **plan.done}
        layout = writer.begin(base, plan.new_rows, kept)
        execute(cfg, plan, layout, key, settings, (w, h), writer)
        n_tracks = None
        if cfg.track:
            from pipelines.track import track_sequences

            n_tracks = len(track_sequences(writer, cfg.tracking, chunk_ids=cfg.masks.tracks_itself()))
        manifest = writer.finish()
        if cfg.rectify:
            writer.write_rectified_set(
                RectifiedSet(
                    calib_path=str(cfg.calib),
                    calib_sha256=calib_sha,
                    rig=calib.rig,
                    image_size=list(calib.image_size),
                    pairs=writer.rectified_pairs(),
                )
            )
        from labeler.review.gallery import write_gallery

        write_gallery(cfg.out)
    new_ids = {it.sample_id for items in plan.todo.values() for it in items if it.keep is None}
    fails = [r for r in writer.failures() if r.sample_id in new_ids]
    still = sum(1 for r in writer.finished_records() if r.status == "skipped" and r.sample_id in new_ids)
    return LabelRun(
        manifest=manifest,
        labelled=plan.n_todo - still,
        skipped=plan.n_inputs - plan.n_todo,
        new_failures=fails[:_FAILURES_SHOWN],
        n_new_failed=len(fails),
        relabelled_changed=plan.stale,
        still_skipped=still,
        tracks=n_tracks,
    )


def execute(
    cfg: PseudoLabelConfig,
    plan: Plan,
    layout: StoreLayout,
    key: str,
    settings: DepthSettings,
    size: tuple[int, int],
    writer: DatasetWriter,
) -> None:
    """Run the graph; the writer commits each shard as it finishes."""
    from tqdm import tqdm

    from labeler.dataset.journal import entry_sha256
    from pipelines.cluster import dask_client

    rewrites = {s: entry_sha256(e) for s, e in plan.rewrites.items()}
    writes = build_graph(cfg, plan.todo, layout, key, settings, size, rewrites)
    if not writes:
        return

    def done(shard: int, result: Callable[[], ShardEntry]) -> None:
        try:
            entry: ShardEntry | None = result()
        except Exception as err:  # noqa: BLE001 — e.g. KilledWorker: this shard fails, the run goes on
            entry = _failed_shard(cfg, shard, plan.todo[shard], layout, key, err, writer)
        if entry is not None:
            writer.commit(entry)

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
                done(shard, functools.partial(_compute_sync, delayed_write))
                bar.update(todo_of[shard])
        else:
            from distributed import as_completed

            futures = client.compute(list(writes.values()))
            shard_of = {f.key: s for f, s in zip(futures, writes, strict=True)}
            for fut in as_completed(futures):
                shard = shard_of[fut.key]
                done(shard, fut.result)
                bar.update(todo_of[shard])


def _compute_sync(delayed_write: Any) -> ShardEntry:
    import dask

    (entry,) = dask.compute(delayed_write, scheduler="sync")
    return entry


def _failed_shard(
    cfg: PseudoLabelConfig,
    shard: int,
    items: list[Item],
    layout: StoreLayout,
    key: str,
    err: BaseException,
    writer: DatasetWriter,
) -> ShardEntry | None:
    """A shard whose task died (a worker killed repeatedly, an error outside any sample): its samples are
    recorded as failed with the reason. A disk or permission error stops the run in one line instead, and
    a shard that carries finished samples is left for the next run rather than lose them."""
    from labeler.stages import StageFailure, write_stage

    writer.abandon(shard)  # a rewrite that failed half-way: its committed files come back
    if isinstance(err, OSError):
        line = disk_error(err, cfg.out, f"shard {shard}")
        text = " ".join(str(err).split())
        raise line or LabelerError(f"{cfg.out}: cannot write shard {shard} ({text})") from None
    if any(it.keep is not None for it in items):
        log.warning("shard %s not written this run (%s); the next run retries it", shard, type(err).__name__)
        return None
    text = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    fails = [
        StageFailure.of(place, it.row, "shard", text)
        if (place := it.task or it.raw or it.failed or it.keep) is not None
        else StageFailure(it.sample_id, it.row, "shard", text)
        for it in items
    ]
    return write_stage(cfg.out, shard, layout, key, list(fails), previews=False)


def _check_tracking(cfg: PseudoLabelConfig, writer: DatasetWriter) -> None:
    """A tracked dataset is added to with --track and the same tracking settings (one set of ids)."""
    from labeler.dataset.manifest import has_manifest

    if not has_manifest(cfg.out):
        return
    try:
        before = writer.manifest().tracking
    except InputError:
        return  # an unreadable manifest: this run rebuilds it from the shard index

    if before is not None and not cfg.track:
        raise InputError(
            cfg.out, "was labelled with --track", "pass --track to add to it, or use another --out"
        )
    if before is not None and before != cfg.tracking:
        raise InputError(
            cfg.out,
            f"was tracked with {before}, not {cfg.tracking}",
            "keep its tracking settings or use another --out",
        )


def _resolve_sam3_tracking(cfg: PseudoLabelConfig) -> PseudoLabelConfig:
    """`--masks sam3 --track` follows objects with the official video model where it runs (CUDA: with
    --gpu), else by association; the choice goes into the masks config, so the run key and the manifest
    record it and a resume on another kind of machine is refused rather than mixing the two."""
    if not (cfg.track and isinstance(cfg.masks, Sam3Config)):
        return cfg
    from labeler.segment.sam3_video import video_model_problem

    masks = cfg.masks
    if masks.track_with is None:
        way = "video_model" if cfg.gpus else "association"
        masks = masks.model_copy(update={"track_with": way})
    if masks.track_with == "video_model":
        problem = video_model_problem("cuda" if cfg.gpus else "cpu")
        if problem:
            raise LabelerError(f"--sam3-track-with video_model: {problem}")
    return cfg.model_copy(update={"masks": masks})


def _check_keyframes(cfg: PseudoLabelConfig) -> None:
    """Keyframe settings only shape a run whose mask backend tracks objects itself (sam2 with --track)."""
    default = type(cfg.tracking)()
    if (cfg.track and cfg.masks.tracks_objects) or (
        cfg.tracking.keyframe_every == default.keyframe_every
        and cfg.tracking.min_coverage == default.min_coverage
    ):
        return
    how = "its video model has no keyframes" if cfg.masks.tracks_itself() else "it is linked by association"
    why = "without --track" if not cfg.track else f"with --masks {cfg.masks.name} ({how})"
    raise LabelerError(
        f"--keyframe-every / --keyframe-min-coverage do nothing {why}; they set SAM2's keyframes under "
        "--masks sam2 --track: drop them, or label with --masks sam2 --track"
    )


def _check_trackable(cfg: PseudoLabelConfig, plan: Plan) -> None:
    """--track follows objects over a sequence: inputs without one are refused before any labelling."""
    if not cfg.track or plan.done:
        return
    for items in plan.todo.values():
        for it in items:
            rec = it.raw or it.task or it.failed or it.keep
            if rec is not None and rec.sequence is not None:
                return
    raise InputError(
        cfg.inputs,
        "--track needs a sequence (a video, or a folder of frames named by their timestamps) and these "
        "captures have none",
        "drop --track, or label a video / a timestamped folder",
    )


def _check_backends(cfg: PseudoLabelConfig) -> None:
    """Weights, configs: a mistake is one line before the first sample, not one failure per sample."""
    import labeler.segment
    import labeler.stereo  # noqa: F401 — registers the backends
    from labeler.segment.base import MASK_BACKENDS
    from labeler.stereo.base import STEREO_BACKENDS

    STEREO_BACKENDS.check(cfg.stereo)
    MASK_BACKENDS.check(cfg.masks)
