"""The pseudo-label stages as plain functions over typed records: load → disparity → masks → depth and
objects → shard write. `pipelines/` wires them into a Dask graph; tests call them directly.

A stage never raises for a bad sample: it returns a StageFailure naming the stage and the one-line error,
and later stages pass it through, so one bad sample is a row of the samples table, not a stopped run.

On a GPU worker only the model calls run (`disparity_batch_stage`, `masks_batch_stage`); decoding, depth,
object statistics, digests, previews, compression and writes (`load_stage`, `finish_batch_stage`,
`write_stage`) are separate tasks that CPU workers run while the GPU takes the next batch.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.captures import RectifiedPair
from data_schema.manifest import (
    DepthSettings,
    LabelTask,
    ObjectPolicy,
    ObjectRow,
    SampleRecord,
    ShardEntry,
    SourceFiles,
    StoreLayout,
    TrackingConfig,
)
from labeler.dataset.shards import SampleArrays
from labeler.segment.base import Masks
from labeler.stereo.base import Disparity


@dataclass(frozen=True)
class StageFailure:
    """A sample that failed at `stage`; a sequence's frame keeps its place in the sequence (a frame a
    truncated video does not hold is still frame 12 of its video)."""

    sample_id: str
    row: int
    stage: str
    error: str
    sequence: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = None

    @classmethod
    def of(cls, place, row: int, stage: str, error: str) -> StageFailure:
        """The failure of a task or a source (`place`: anything with sample_id or pair_id, sequence,
        frame_index and timestamp_s)."""
        sid = getattr(place, "sample_id", None) or place.pair_id
        seq = place.sequence
        frame = place.frame_index if seq is not None else None
        return cls(sid, row, stage, error, seq, frame, place.timestamp_s if seq is not None else None)

    def record(self) -> SampleRecord:
        return SampleRecord(
            sample_id=self.sample_id,
            status="failed",
            row=self.row,
            error=f"{self.stage}: {self.error}",
            sequence=self.sequence,
            frame_index=self.frame_index,
            timestamp_s=self.timestamp_s,
        )


@dataclass(frozen=True)
class SkippedFrame:
    """A still frame of a sequence (labeler/rig/still.py): recorded, never labelled."""

    sample_id: str
    row: int
    duplicate_of: str
    sequence: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = None

    def record(self) -> SampleRecord:
        return SampleRecord(
            sample_id=self.sample_id,
            status="skipped",
            row=self.row,
            duplicate_of=self.duplicate_of,
            sequence=self.sequence,
            frame_index=self.frame_index,
            timestamp_s=self.timestamp_s,
        )


@dataclass(frozen=True)
class LoadedPair:
    task: LabelTask
    left: np.ndarray
    right: np.ndarray
    source: SourceFiles
    started: float


@dataclass(frozen=True)
class PairDisparity:
    pair: LoadedPair
    disparity_px: np.ndarray
    confidence: np.ndarray
    made: Disparity | None = None  # the backend's record of how (scale, iterations, dtype)


@dataclass(frozen=True)
class LabelledSample:
    record: SampleRecord
    objects: list[ObjectRow]
    arrays: SampleArrays


@dataclass(frozen=True)
class PairMasks:
    """A pair's disparity and its masks: the model work is done, the CPU work (depth, objects) is not."""

    disp: PairDisparity
    masks: Masks
    device: str = "cpu"


def _stage(name: str):
    """Pass failures through; turn any exception of this sample into a StageFailure."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(item, *args, **kwargs):
            if isinstance(item, StageFailure | SkippedFrame):
                return item
            task = item if isinstance(item, LabelTask) else _task_of(item)
            try:
                return fn(item, *args, **kwargs)
            except Exception as err:  # noqa: BLE001 — one bad sample must never stop the run
                text = " ".join(str(err).split()) or type(err).__name__
                return StageFailure.of(task, task.row, name, text)

        return run

    return wrap


def _task_of(item) -> LabelTask:
    if isinstance(item, PairMasks):
        return item.disp.pair.task
    return item.task if isinstance(item, LoadedPair) else item.pair.task


def stereo_backend(config: StereoConfig, device: str):
    """One backend (and so one model load) per worker process and config."""
    from labeler.stereo.base import STEREO_BACKENDS  # importing labeler.stereo registers the backends

    return STEREO_BACKENDS.shared(config, device=device)


def mask_backend(config: MaskConfig, device: str):
    from labeler.segment.base import MASK_BACKENDS

    return MASK_BACKENDS.shared(config, device=device)


@_stage("load")
def load_stage(task: LabelTask, *, expected_size: tuple[int, int] | None = None) -> LoadedPair:
    """Read a rectified pair; `expected_size` (width, height) is the calibration's."""
    from labeler.errors import InputError
    from labeler.io import read_rgb_hashed

    started = time.perf_counter()
    (left, left_sha), (right, right_sha) = read_rgb_hashed(task.left_path), read_rgb_hashed(task.right_path)
    if left.shape != right.shape:
        raise InputError(
            task.right_path,
            f"size {right.shape[1]}x{right.shape[0]} differs from the left "
            f"image's {left.shape[1]}x{left.shape[0]}",
            "re-run rectify for this pair",
        )
    h, w = left.shape[:2]
    if expected_size is not None and (w, h) != tuple(expected_size):
        raise InputError(
            task.left_path,
            f"size {w}x{h} is not the calibration's {expected_size[0]}x{expected_size[1]}",
            "rectify it with this calibration",
        )
    for path, want, got in (
        (task.left_path, task.left_sha256, left_sha),
        (task.right_path, task.right_sha256, right_sha),
    ):
        if want is not None and want != got:
            raise InputError(path, "content differs from the hash rectify recorded", "re-run rectify")
    src = SourceFiles(
        left_path=task.left_path, right_path=task.right_path, left_sha256=left_sha, right_sha256=right_sha
    )
    return LoadedPair(task, left, right, src, started)


@_stage("disparity")
def disparity_stage(pair: LoadedPair, config: StereoConfig, device: str = "cpu") -> PairDisparity:
    result = stereo_backend(config, device).disparity(pair.left, pair.right)
    return PairDisparity(pair, result.disparity_px, result.confidence, result)


@_stage("masks")
def masks_stage(disp: PairDisparity, config: MaskConfig, device: str = "cpu") -> PairMasks:
    return PairMasks(disp, mask_backend(config, device).masks(disp.pair.left, disparity_px=disp.disparity_px))


@_stage("depth+objects")
def finish_stage(
    pm: PairMasks, config: MaskConfig, settings: DepthSettings, policy: ObjectPolicy | None = None
) -> LabelledSample:
    """Metric depth, the instance map, per-object statistics and digests of one pair (CPU work)."""
    from labeler.depth import (
        apply_object_policy,
        disparity_to_depth,
        instance_map,
        object_records,
        sample_stats,
    )

    disp, masks = pm.disp, pm.masks
    pair = disp.pair
    depth = disparity_to_depth(disp.disparity_px, settings)
    policy = policy or ObjectPolicy()
    ids, source = instance_map(masks.masks, masks.scores)
    ids, kept, n_dropped = apply_object_policy(ids, depth, policy)
    source = source[kept - 1]
    has_stability = config.has_stability
    objects = object_records(
        ids,
        depth,
        masks.scores[source],
        masks.stability[source] if has_stability else None,
        min_depth_px=policy.min_depth_px,
    )
    if masks.class_names is not None:  # a class-naming backend (sam3): each object keeps its mask's class
        names = masks.class_names
        objects = [o.model_copy(update={"class_name": names[source[o.id - 1]]}) for o in objects]
    chunk_ids = masks.track_ids  # a backend that tracks (sam2 --track): the chunk's own object ids
    track_of = {o.id: chunk_ids[source[o.id - 1]] for o in objects} if chunk_ids is not None else {}
    arrays = SampleArrays(
        left=pair.left,
        right=pair.right,
        disparity_px=disp.disparity_px,
        depth_m=depth,
        confidence=disp.confidence,
        instance_ids=ids,
    )
    task = pair.task
    record = SampleRecord(
        sample_id=task.sample_id,
        status="ok",
        row=task.row,
        source=pair.source,
        digests=arrays.digests(),
        stats=sample_stats(depth, disp.confidence, len(objects), n_objects_dropped=n_dropped),
        seconds=time.perf_counter() - pair.started,
        device=pm.device,
        stereo_scale=disp.made.scale if disp.made else None,
        stereo_iters=disp.made.iters if disp.made else None,
        stereo_dtype=disp.made.dtype if disp.made else None,
        sequence=task.sequence,
        frame_index=task.frame_index,
        timestamp_s=task.timestamp_s,
    )
    from labeler.doubt import shape_signals

    shape = shape_signals(ids, depth)  # doubt signals of the masks' shapes (labeler/doubt.py)
    rows = [
        ObjectRow(
            sample_id=task.sample_id,
            row=task.row,
            **o.model_dump(exclude={"thickness_px", "edge_alignment"}),
            thickness_px=shape[o.id][0],
            edge_alignment=shape[o.id][1],
            track_id=track_of.get(o.id),
        )
        for o in objects
    ]
    return LabelledSample(record, rows, arrays)


# A batch goes through the backend's batched method (one GPU forward for several samples). If that call
# fails, the batch is redone one sample at a time, so the error lands on the sample that caused it.


def disparity_batch_stage(
    pairs: list[LoadedPair | StageFailure], config: StereoConfig, device: str = "cpu"
) -> list[PairDisparity | StageFailure]:
    ok = [p for p in pairs if isinstance(p, LoadedPair)]
    try:
        found = stereo_backend(config, device).disparity_many([(p.left, p.right) for p in ok]) if ok else []
    except Exception:  # noqa: BLE001 — fall back to per-sample calls that record the failure
        return [disparity_stage(p, config, device) for p in pairs]
    done = {id(p): PairDisparity(p, d.disparity_px, d.confidence, d) for p, d in zip(ok, found, strict=True)}
    return [done[id(p)] if isinstance(p, LoadedPair) else p for p in pairs]


def masks_batch_stage(
    disps: list[PairDisparity | StageFailure], config: MaskConfig, device: str = "cpu"
) -> list[PairMasks | StageFailure]:
    ok = [d for d in disps if isinstance(d, PairDisparity)]
    try:
        found = (
            mask_backend(config, device).masks_many(
                [d.pair.left for d in ok], disparities_px=[d.disparity_px for d in ok]
            )
            if ok
            else []
        )
    except Exception:  # noqa: BLE001 — fall back to per-sample calls that record the failure
        return [masks_stage(d, config, device) for d in disps]
    done = {id(d): PairMasks(d, m, device) for d, m in zip(ok, found, strict=True)}
    return [done[id(d)] if isinstance(d, PairDisparity) else d for d in disps]


def track_masks_stage(
    disps: list[PairDisparity | StageFailure | SkippedFrame],
    config: MaskConfig,
    tracking: TrackingConfig,
    device: str = "cpu",
    min_area_px: int = 1,
) -> list[PairMasks | StageFailure | SkippedFrame]:
    """A sequence chunk's masks in one call, its frames in order, for a backend that tracks objects itself
    (sam2 with --track): each object carries the chunk's id for it. Still frames and failed samples pass
    through unseen; if the call fails, every frame of the chunk records the one-line error."""
    ok = [d for d in disps if isinstance(d, PairDisparity)]
    try:
        backend = mask_backend(config, device)
        found = backend.track_masks([d.pair.left for d in ok], tracking=tracking, min_area_px=min_area_px)
    except Exception as err:  # noqa: BLE001 — the chunk's samples fail, the run goes on
        text = " ".join(str(err).split()) or type(err).__name__
        return [
            StageFailure.of(d.pair.task, d.pair.task.row, "masks", text)
            if isinstance(d, PairDisparity)
            else d
            for d in disps
        ]
    done = {id(d): PairMasks(d, m, device) for d, m in zip(ok, found, strict=True)}
    return [done[id(d)] if isinstance(d, PairDisparity) else d for d in disps]


def finish_batch_stage(
    items: list[PairMasks | StageFailure],
    config: MaskConfig,
    settings: DepthSettings,
    policy: ObjectPolicy | None = None,
) -> list[LabelledSample | StageFailure]:
    return [finish_stage(it, config, settings, policy) for it in items]


def label_batch_stage(
    disps: list[PairDisparity | StageFailure],
    config: MaskConfig,
    settings: DepthSettings,
    device: str = "cpu",
    policy: ObjectPolicy | None = None,
) -> list[LabelledSample | StageFailure]:
    """Masks then depth and objects in one task (CPU runs, where a task boundary would only copy)."""
    return finish_batch_stage(masks_batch_stage(disps, config, device), config, settings, policy)


def write_stage(
    dataset: str | Path,
    shard: int,
    layout: StoreLayout,
    run_key: str,
    samples: list[LabelledSample | StageFailure],
    *,
    previews: bool = True,
    rectified: list[RectifiedPair] | None = None,
    rewriting: str | None = None,
) -> ShardEntry:
    """A shard's write task: its previews, then its files through the dataset's one write path. Returns the
    shard's index entry; the client committing it is what marks the shard done. `rewriting`: the
    content_sha256 of the shard's committed entry when it is written again (journalled first)."""
    from labeler.dataset.sidecars import preview_path
    from labeler.dataset.task_io import write_shard_files

    ok = sorted((s for s in samples if isinstance(s, LabelledSample)), key=lambda s: s.record.row)
    if previews:
        from labeler.previews import write_preview

        for s in ok:
            write_preview(preview_path(dataset, s.record.sample_id), s.arrays, s.objects)
    records = sorted(
        (s.record if isinstance(s, LabelledSample) else s.record() for s in samples), key=lambda r: r.row
    )
    return write_shard_files(
        dataset,
        shard,
        layout,
        run_key,
        records,
        [o for s in ok for o in s.objects],
        {s.record.row: s.arrays for s in ok},
        rectified=rectified or [],
        rewriting=rewriting,
    )
