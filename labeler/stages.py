"""The pseudo-label stages as plain functions over typed records: load → disparity → masks → depth and
objects → shard write. `pipelines/` wires them into a Dask graph; tests call them directly.

A stage never raises for a bad sample: it returns a StageFailure naming the stage and the one-line error,
and later stages pass it through, so one bad sample is a manifest entry, not a stopped run.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.manifest import DepthSettings, LabelTask, SampleRecord, ShardPart, SourceFiles, StoreLayout
from labeler.segment.base import Masks
from labeler.shards import SampleArrays


@dataclass(frozen=True)
class StageFailure:
    sample_id: str
    index: int
    stage: str
    error: str

    def record(self) -> SampleRecord:
        return SampleRecord(
            sample_id=self.sample_id, status="failed", index=self.index, error=f"{self.stage}: {self.error}"
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


@dataclass(frozen=True)
class LabelledSample:
    record: SampleRecord
    arrays: SampleArrays


def _stage(name: str):
    """Pass failures through; turn any exception of this sample into a StageFailure."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(item, *args, **kwargs):
            if isinstance(item, StageFailure):
                return item
            task = item if isinstance(item, LabelTask) else _task_of(item)
            try:
                return fn(item, *args, **kwargs)
            except Exception as err:  # noqa: BLE001 — one bad sample must never stop the run
                text = " ".join(str(err).split()) or type(err).__name__
                return StageFailure(task.sample_id, task.index, name, text)

        return run

    return wrap


def _task_of(item) -> LabelTask:
    return item.task if isinstance(item, LoadedPair) else item.pair.task


@functools.lru_cache(maxsize=4)
def stereo_backend(config: StereoConfig, device: str):
    """One backend (and so one model load) per worker process and config."""
    import labeler.stereo  # noqa: F401 — registers the backends
    from labeler.stereo.base import STEREO_BACKENDS

    cls = STEREO_BACKENDS.get(config.name)
    return cls(config, device=device if cls.uses_cuda else "cpu")


@functools.lru_cache(maxsize=4)
def mask_backend(config: MaskConfig, device: str):
    import labeler.segment  # noqa: F401 — registers the backends
    from labeler.segment.base import MASK_BACKENDS

    cls = MASK_BACKENDS.get(config.name)
    return cls(config, device=device if cls.uses_cuda else "cpu")


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
    return PairDisparity(pair, result.disparity_px, result.confidence)


@_stage("masks+depth")
def label_stage(
    disp: PairDisparity, config: MaskConfig, settings: DepthSettings, device: str = "cpu"
) -> LabelledSample:
    """Masks, metric depth, the instance map and per-object statistics of one pair."""
    masks = mask_backend(config, device).masks(disp.pair.left, disparity_px=disp.disparity_px)
    return _labelled(disp, masks, config, settings)


@_stage("masks+depth")
def _labelled(
    disp: PairDisparity, masks: Masks, config: MaskConfig, settings: DepthSettings
) -> LabelledSample:
    from labeler.depth import disparity_to_depth, instance_map, object_records, sample_stats

    pair = disp.pair
    depth = disparity_to_depth(disp.disparity_px, settings)
    ids, source = instance_map(masks.masks, masks.scores)
    has_stability = config.name == "sam2"
    objects = object_records(
        ids, depth, masks.scores[source], masks.stability[source] if has_stability else None
    )
    arrays = SampleArrays(
        left=pair.left,
        right=pair.right,
        disparity_px=disp.disparity_px,
        depth_m=depth,
        confidence=disp.confidence,
        instance_ids=ids,
    )
    record = SampleRecord(
        sample_id=pair.task.sample_id,
        status="ok",
        index=pair.task.index,
        source=pair.source,
        digests=arrays.digests(),
        stats=sample_stats(depth, disp.confidence, len(objects)),
        objects=objects,
        seconds=time.perf_counter() - pair.started,
    )
    return LabelledSample(record, arrays)


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
    done = {id(p): PairDisparity(p, d.disparity_px, d.confidence) for p, d in zip(ok, found, strict=True)}
    return [done.get(id(p), p) for p in pairs]


def label_batch_stage(
    disps: list[PairDisparity | StageFailure],
    config: MaskConfig,
    settings: DepthSettings,
    device: str = "cpu",
) -> list[LabelledSample | StageFailure]:
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
        return [label_stage(d, config, settings, device) for d in disps]
    masks = {id(d): m for d, m in zip(ok, found, strict=True)}
    return [_labelled(d, masks[id(d)], config, settings) if id(d) in masks else d for d in disps]


def write_stage(
    dataset: str | Path,
    shard: int,
    layout: StoreLayout,
    run_key: str,
    samples: list[LabelledSample | StageFailure],
    *,
    previews: bool = True,
    rectified: list | None = None,
) -> ShardPart:
    """The single writer of one shard: arrays, then previews, then the part record (the resume marker)."""
    from labeler.io import write_text_atomic
    from labeler.shards import write_shard

    ok = [s for s in samples if isinstance(s, LabelledSample)]
    write_shard(dataset, shard, layout, {s.record.index: s.arrays for s in ok})
    if previews:
        from labeler.previews import write_preview

        for s in ok:
            write_preview(
                Path(dataset) / "previews" / f"{s.record.sample_id}.png", s.arrays, s.record.objects
            )
    part = ShardPart(
        shard=shard,
        run_key=run_key,
        samples=[s.record if isinstance(s, LabelledSample) else s.record() for s in samples],
        rectified=rectified or [],
    )
    write_text_atomic(part_path(dataset, shard), part.model_dump_json())
    return part


def part_path(dataset: str | Path, shard: int) -> Path:
    return Path(dataset) / "parts" / f"shard_{shard:05d}.json"
