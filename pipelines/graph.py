"""The pseudo-label graph: [rectify →] load → disparity → masks → depth + objects → shard write.

Each shard of the store gets exactly one write task, which depends on the label tasks of its samples
(zarr-python #3682: concurrent writers into one shard lose data). Task keys come from the content of their
inputs (dask's tokenize), so a re-run names the same work the same way. With `--gpu`, only the model calls
(disparity, and masks for a model mask backend) take the worker's GPU resource; loading, depth, object
statistics, previews and writes are separate tasks that run beside them, so the GPU never waits on them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from data_schema.captures import RectifiedPair, StereoPairSource
from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import (
    DepthSettings,
    LabelTask,
    ObjectPolicy,
    ObjectRow,
    SampleRecord,
    StoreLayout,
    TrackingConfig,
)
from labeler.stages import (
    LabelledSample,
    LoadedPair,
    SkippedFrame,
    StageFailure,
    disparity_batch_stage,
    finish_batch_stage,
    label_batch_stage,
    load_stage,
    masks_batch_stage,
    track_masks_stage,
    write_stage,
)
from pipelines.plan import Item, task_from_rectified


def _rectify(
    srcs: list[StereoPairSource], calib_path: str, out: str, still_threshold_dn: float | None
) -> list[RectifiedPair]:
    """Rectify a run of raw pairs into OUT/rectified (task body for `labeler run`): a video's frames in one
    sequential decode pass; still frames of a sequence recorded as skipped (unless --keep-duplicates)."""
    from labeler.dataset.task_io import rectified_dir
    from labeler.rig.rectify import rectify_sources

    return rectify_sources(
        srcs, _maps(calib_path), calib_path, rectified_dir(out), still_threshold_dn=still_threshold_dn
    )


def _runs(items: list[Item]) -> list[list[Item]]:
    """A shard's raw pairs cut into runs that one task decodes in order: a sequence's frames together (a
    video read once from its first frame here to its last), each lone capture alone."""
    runs: list[list[Item]] = []
    for it in items:
        assert it.raw is not None
        prev = runs[-1][-1].raw if runs else None
        if prev is not None and it.raw.sequence is not None and prev.sequence == it.raw.sequence:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs


def _pick(rects: list[RectifiedPair], k: int) -> RectifiedPair:
    return rects[k]


@functools.lru_cache(maxsize=2)
def _maps(calib_path: str) -> Any:
    """Remap tables once per worker process and calibration."""
    from labeler.rig.calibration import load_calibration
    from labeler.rig.rectify import RectifyMaps

    return RectifyMaps.from_calibration(load_calibration(calib_path))


def _load_rectified(pair: RectifiedPair, row: int, out: str, size: tuple[int, int]) -> Any:
    from labeler.dataset.task_io import rectified_dir

    if pair.status == "skipped":
        src = pair.source
        return SkippedFrame(
            pair.pair_id, row, pair.duplicate_of or "", src.sequence, src.frame_index, src.timestamp_s
        )
    if pair.status != "ok":
        return StageFailure.of(pair.source, row, "rectify", pair.error or "failed")
    loaded = load_stage(task_from_rectified(pair, row, rectified_dir(out)), expected_size=size)
    if not isinstance(loaded, LoadedPair):
        return loaded
    # recorded relative to the dataset: they move with it, and the labels (so the dataset version) do not
    # depend on the --out folder's name (labeler/dataset/sources.py resolves them against the dataset)
    files = loaded.source
    relative = {
        "left_path": os.path.relpath(files.left_path, out),
        "right_path": os.path.relpath(files.right_path, out),
    }
    return dataclasses.replace(loaded, source=files.model_copy(update=relative))


def _device(gpus: tuple[int, ...]) -> str:
    from pipelines.cluster import worker_device

    return worker_device(gpus)


def _disparity(loaded: list, stereo: Any, gpus: tuple[int, ...]) -> list:
    return disparity_batch_stage(loaded, stereo, _device(gpus))


def _masks(disps: list, masks: Any, gpus: tuple[int, ...]) -> list:
    return masks_batch_stage(disps, masks, _device(gpus))


def _finish(items: list, masks: Any, settings: DepthSettings, policy: ObjectPolicy) -> list:
    return finish_batch_stage(items, masks, settings, policy)


def _load_and_label(
    sources: list[tuple[LabelTask | RectifiedPair, int]],
    out: str,
    size: tuple[int, int],
    stereo: Any,
    masks: Any,
    settings: DepthSettings,
    policy: ObjectPolicy,
    gpus: tuple[int, ...],
) -> list:
    """A batch that runs on the CPU alone, in one task: its loads (a `LabelTask`, or a pair `labeler run`
    rectified), disparity, masks and objects. Separate tasks let the loads run beside a GPU's model
    calls; without a GPU they would only add scheduling and hand-offs between tasks."""
    loaded = [
        _load_rectified(src, row, out, size)
        if isinstance(src, RectifiedPair)
        else load_stage(src, expected_size=size)
        for src, row in sources
    ]
    device = _device(gpus)  # a GPU worker's device all the same: CPU backends build for the CPU anyway
    return label_batch_stage(disparity_batch_stage(loaded, stereo, device), masks, settings, device, policy)


def _carry(out: str, rec: SampleRecord, objects: tuple[ObjectRow, ...]) -> list:
    """A finished sample of a shard being rewritten: its arrays as stored, its records unchanged."""
    from labeler.dataset.task_io import stored_arrays

    try:
        arrays = stored_arrays(out, rec.row)
    except Exception as err:  # noqa: BLE001 — a damaged row is this sample's failure, not the run's
        return [StageFailure.of(rec, rec.row, "store", f"stored arrays unreadable ({err})")]
    return [LabelledSample(rec, list(objects), arrays)]


def _failed(rec: SampleRecord) -> list:
    if rec.status == "skipped":  # a still frame: stays skipped
        return [
            SkippedFrame(
                rec.sample_id, rec.row, rec.duplicate_of or "", rec.sequence, rec.frame_index, rec.timestamp_s
            )
        ]
    stage, _, error = (rec.error or "failed: unknown").partition(": ")
    return [StageFailure.of(rec, rec.row, stage, error or stage)]


def _write(
    out: str,
    shard: int,
    layout: StoreLayout,
    key: str,
    batches: list[list],
    *,
    previews: bool,
    rectified: list,
    rewriting: str | None = None,
) -> Any:
    """The shard's single writer, over the results of all its batches. `rewriting`: the entry_sha256 of
    the shard's committed entry when it is written again."""
    samples = [s for batch in batches for s in batch]
    pairs = [p for run in rectified for p in run]
    return write_stage(
        out, shard, layout, key, samples, previews=previews, rectified=pairs, rewriting=rewriting
    )


def _track(
    disps: list[list], masks: Any, tracking: TrackingConfig, min_area_px: int, gpus: tuple[int, ...]
) -> list:
    """A sequence chunk's disparity batches, in frame order, through one tracking call."""
    flat = [d for batch in disps for d in batch]
    return track_masks_stage(flat, masks, tracking, _device(gpus), min_area_px)


def _sequence(it: Item) -> str | None:
    rec = it.raw if it.raw is not None else it.task
    return rec.sequence if rec is not None else None


def _batches(items: list[Item], size: int, *, by_sequence: bool) -> list[tuple[int, list[Item]]]:
    """(position in its chunk, batch) of a shard's items, `size` at a time; `by_sequence`: a batch never
    mixes sequences, and position 0 starts each sequence chunk (a sequence's frames within the shard)."""
    if not by_sequence:
        return [(k, items[k : k + size]) for k in range(0, len(items), size)]
    runs: list[list[Item]] = []
    for it in items:
        if runs and _sequence(runs[-1][-1]) == _sequence(it):
            runs[-1].append(it)
        else:
            runs.append([it])
    return [(k, run[k : k + size]) for run in runs for k in range(0, len(run), size)]


def _tracked_chunk(
    cfg: PseudoLabelConfig,
    tracked: list[tuple[list[Item], Any]],
    key: str,
    settings: DepthSettings,
    gpu: dict,
) -> Any:
    """One sequence chunk's tracking task (the model's memory runs over its frames in order) and the CPU
    task that finishes its samples. The chunk is the sequence's frames within one shard: chunks label in
    parallel, and the track pass stitches their ids at the borders (pipelines/track.py)."""
    import dask
    from dask.base import tokenize

    ids = [(it.sample_id, it.row) for chunk, _ in tracked for it in chunk]
    tok = tokenize(ids, key, cfg.tracking)
    with dask.annotate(retries=1, **gpu):
        masks = dask.delayed(_track)(
            [d for _, d in tracked],
            cfg.masks,
            cfg.tracking,
            cfg.objects.min_area_px,
            cfg.gpus,
            dask_key_name=f"track-{tok}",
        )
    return dask.delayed(_finish)(masks, cfg.masks, settings, cfg.objects, dask_key_name=f"finish-{tok}")


def _uses_cuda(cfg: PseudoLabelConfig) -> tuple[bool, bool]:
    import labeler.segment
    import labeler.stereo  # noqa: F401 — registers the backends
    from labeler.segment.base import MASK_BACKENDS
    from labeler.stereo.base import STEREO_BACKENDS

    return (STEREO_BACKENDS.get(cfg.stereo.name).uses_cuda, MASK_BACKENDS.get(cfg.masks.name).uses_cuda)


def build_graph(
    cfg: PseudoLabelConfig,
    todo: dict[int, list[Item]],
    layout: StoreLayout,
    key: str,
    settings: DepthSettings,
    size: tuple[int, int],
    rewrites: dict[int, str] | None = None,
) -> dict[int, Any]:
    """{shard: its single write task}. Within a shard, samples go through the backends `batch_size` at a
    time (one GPU forward per batch); in run mode each write also records its pairs' rectification.
    `rewrites` (shard: the content_sha256 of its committed entry) are written under a journal."""
    import dask
    from dask.base import tokenize

    out = str(cfg.out)
    stereo_gpu, masks_gpu = _uses_cuda(cfg) if cfg.gpus else (False, False)
    model_tracks = cfg.track and cfg.masks.tracks_itself()
    gpu = {"resources": {"GPU": 1}}
    writes = {}
    for shard, items in todo.items():
        batches: list[Any] = []
        rectified: list[Any] = []
        for it in items:
            tok = tokenize(it.sample_id, it.row, key)
            if it.failed is not None:
                batches.append(dask.delayed(_failed, pure=True)(it.failed, dask_key_name=f"failed-{tok}"))
            elif it.keep is not None:
                batches.append(
                    dask.delayed(_carry)(out, it.keep, it.keep_objects, dask_key_name=f"carry-{tok}")
                )
        label = [it for it in items if it.task is not None or it.raw is not None]
        rect_of: dict[str, Any] = {}  # sample id -> its rectified record (a task's output, picked)
        still = None if cfg.keep_duplicates else cfg.still_threshold_dn
        for run in _runs([it for it in label if it.raw is not None]):
            tok = tokenize([(it.sample_id, it.row) for it in run], key, still)
            recs = dask.delayed(_rectify)(
                [it.raw for it in run], str(cfg.calib), out, still, dask_key_name=f"rectify-{tok}"
            )
            rectified.append(recs)
            for k, it in enumerate(run):
                rect_of[it.sample_id] = dask.delayed(_pick, pure=True)(
                    recs, k, dask_key_name=f"pick-{tok}-{k}"
                )
        tracked: list[Any] = []  # a sequence chunk's disparity batches, for a backend that tracks
        for start, chunk in _batches(label, cfg.batch_size, by_sequence=model_tracks):
            if start == 0 and tracked:
                batches.append(_tracked_chunk(cfg, tracked, key, settings, gpu if masks_gpu else {}))
                tracked = []
            batch_tok = tokenize([(it.sample_id, it.row) for it in chunk], key)
            if not (masks_gpu or stereo_gpu or (model_tracks and _sequence(chunk[0]) is not None)):
                sources = [(rect_of[it.sample_id] if it.raw is not None else it.task, it.row) for it in chunk]
                with dask.annotate(retries=1):
                    batches.append(
                        dask.delayed(_load_and_label)(
                            sources,
                            out,
                            size,
                            cfg.stereo,
                            cfg.masks,
                            settings,
                            cfg.objects,
                            cfg.gpus,
                            dask_key_name=f"label-{batch_tok}",
                        )
                    )
                continue
            loaded = []
            for it in chunk:
                tok = tokenize(it.sample_id, it.row, key)
                if it.raw is not None:
                    loaded.append(
                        dask.delayed(_load_rectified)(
                            rect_of[it.sample_id], it.row, out, size, dask_key_name=f"load-{tok}"
                        )
                    )
                else:
                    loaded.append(
                        dask.delayed(load_stage)(it.task, expected_size=size, dask_key_name=f"load-{tok}")
                    )
            with dask.annotate(retries=1, **(gpu if stereo_gpu else {})):
                disp = dask.delayed(_disparity)(
                    loaded, cfg.stereo, cfg.gpus, dask_key_name=f"disparity-{batch_tok}"
                )
            if model_tracks and _sequence(chunk[0]) is not None:
                tracked.append((chunk, disp))
            else:  # a model on a GPU: the loads and the CPU work of each batch are tasks of their own
                with dask.annotate(retries=1, **(gpu if masks_gpu else {})):
                    masks = dask.delayed(_masks)(
                        disp, cfg.masks, cfg.gpus, dask_key_name=f"masks-{batch_tok}"
                    )
                batches.append(
                    dask.delayed(_finish)(
                        masks, cfg.masks, settings, cfg.objects, dask_key_name=f"finish-{batch_tok}"
                    )
                )
        if tracked:
            batches.append(_tracked_chunk(cfg, tracked, key, settings, gpu if masks_gpu else {}))
        writes[shard] = dask.delayed(_write)(
            out,
            shard,
            layout,
            key,
            batches,
            previews=cfg.previews,
            rectified=rectified,
            rewriting=(rewrites or {}).get(shard),
            dask_key_name=f"write-{tokenize(shard, key, [(i.sample_id, i.keep is None) for i in items])}",
        )
    return writes
