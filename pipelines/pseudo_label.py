"""The pseudo-label DAG: [rectify →] load → disparity → masks + depth → shard write, on Dask distributed.

Each shard of the store gets exactly one write task, which depends on the label tasks of its samples
(zarr-python #3682: concurrent writers into one shard lose data). Task keys come from the content of
their inputs, so a re-run names the same work the same way; shards whose part record is present and
whose rows still match their digests are not recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from data_schema.captures import RectifiedPair, StereoPairSource
from data_schema.manifest import LabelTask, Manifest, SampleRecord, ShardPart, StoreLayout
from labeler.configs import PseudoLabelConfig
from labeler.errors import InputError
from labeler.stages import disparity_batch_stage, label_batch_stage, load_stage, write_stage

LIBRARIES = (
    "labeler",
    "numpy",
    "opencv-contrib-python-headless",
    "zarr",
    "dask",
    "distributed",
    "torch",
    "scikit-image",
    "sam2",
    "timm",
)


@dataclass(frozen=True)
class Item:
    """A sample to label: its id and row, and either a rectified pair or a raw source to rectify first."""

    sample_id: str
    index: int
    task: LabelTask | None = None
    raw: StereoPairSource | None = None
    failed: SampleRecord | None = None  # already known bad (e.g. rectify failed earlier)


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_key(cfg: PseudoLabelConfig, calib_sha: str, depth_json: str) -> str:
    """Hash of everything that shapes the labels; parts made under another key are stale."""
    text = json.dumps(
        [
            cfg.stereo.model_dump(mode="json"),
            cfg.masks.model_dump(mode="json"),
            calib_sha,
            depth_json,
            cfg.samples_per_shard,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _inputs(cfg: PseudoLabelConfig) -> tuple[list[StereoPairSource | LabelTask], list[SampleRecord]]:
    """Raw sources (run) or rectified tasks (pseudo-label) with placeholder index; earlier failures."""
    from labeler.captures import discover_pairs
    from labeler.rectify import load_rectified_set

    if cfg.rectify:
        return list(discover_pairs(cfg.inputs, layout=cfg.layout, stride=cfg.stride)), []
    folder = cfg.inputs
    if not (folder / "pairs.json").is_file():
        if (folder / "left").is_dir():  # a user's own rectified pairs: left/<id>.png + right/<id>.png
            return [
                LabelTask(sample_id=s.pair_id, index=0, left_path=s.left_path, right_path=s.right_path)
                for s in discover_pairs(folder, layout="pairs")
            ], []
        raise InputError(
            folder,
            "neither pairs.json nor left/ + right/ folders",
            "run `labeler rectify` first, or pass raw captures to `labeler run`",
        )
    tasks, failed = [], []
    for p in load_rectified_set(folder).pairs:
        if p.status == "ok":
            tasks.append(
                LabelTask(
                    sample_id=p.pair_id,
                    index=0,
                    left_path=str(folder / p.left_path),
                    right_path=str(folder / p.right_path),
                    left_sha256=p.left_sha256,
                    right_sha256=p.right_sha256,
                )
            )
        else:
            failed.append(SampleRecord(sample_id=p.pair_id, status="failed", error=f"rectify: {p.error}"))
    return tasks, failed


def _task_from_rectified(pair: RectifiedPair, index: int, folder: Path) -> LabelTask:
    if pair.status != "ok":
        raise InputError(pair.source.left_path, f"rectify failed: {pair.error}", "fix or remove the capture")
    return LabelTask(
        sample_id=pair.pair_id,
        index=index,
        left_path=str(folder / pair.left_path),
        right_path=str(folder / pair.right_path),
        left_sha256=pair.left_sha256,
        right_sha256=pair.right_sha256,
    )


def load_parts(out: Path, key: str) -> dict[int, ShardPart]:
    parts = {}
    for path in sorted((out / "parts").glob("shard_*.json")) if (out / "parts").is_dir() else []:
        try:
            part = ShardPart.model_validate_json(path.read_text())
        except ValueError:
            continue  # a damaged part is as good as none: the shard is redone
        if part.run_key == key:
            parts[part.shard] = part
    return parts


def plan(cfg: PseudoLabelConfig, key: str) -> tuple[list[Item], dict[int, ShardPart]]:
    """Assign rows: ids labelled before keep theirs, new ids are appended in sorted order."""
    inputs, failed = _inputs(cfg)
    parts = load_parts(cfg.out, key)
    known = {s.sample_id: s.index for p in parts.values() for s in p.samples if s.index is not None}
    items, next_index = [], max(known.values(), default=-1) + 1
    for inp in sorted(inputs, key=lambda x: x.sample_id if isinstance(x, LabelTask) else x.pair_id):
        sid = inp.sample_id if isinstance(inp, LabelTask) else inp.pair_id
        index = known.get(sid)
        if index is None:
            index, next_index = next_index, next_index + 1
        if isinstance(inp, LabelTask):
            items.append(Item(sid, index, task=inp.model_copy(update={"index": index})))
        else:
            items.append(Item(sid, index, raw=inp))
    for rec in failed:
        index = known.get(rec.sample_id)
        if index is None:
            index, next_index = next_index, next_index + 1
        items.append(Item(rec.sample_id, index, failed=rec.model_copy(update={"index": index})))
    return sorted(items, key=lambda i: i.index), parts


def shard_is_done(
    part: ShardPart | None, items: list[Item], cfg: PseudoLabelConfig, out: Path, manifest: Manifest
) -> bool:
    """Keep a shard when its part covers exactly these samples and its ok rows match their digests."""
    if part is None or sorted(s.sample_id for s in part.samples) != sorted(i.sample_id for i in items):
        return False
    if cfg.retry_failed and any(s.status == "failed" for s in part.samples):
        return False
    import zarr

    from labeler.validate import sample_problems

    group = zarr.open_group(out / "data.zarr", mode="r")
    return not any(sample_problems(group, s, manifest) for s in part.samples if s.status == "ok")


# ------------------------------------------------------------------------------------------ execution


def _rectify(src: StereoPairSource, calib_path: str, out: str) -> RectifiedPair:
    """Rectify one raw pair into OUT/rectified (task body for `labeler run`)."""
    from labeler.rectify import rectify_source

    return rectify_source(src, _maps(calib_path), calib_path, Path(out) / "rectified")


@functools.lru_cache(maxsize=2)
def _maps(calib_path: str):
    """Remap tables once per worker process and calibration."""
    from labeler.calibration import load_calibration
    from labeler.rectify import RectifyMaps

    return RectifyMaps.from_calibration(load_calibration(calib_path))


def _load_rectified(pair: RectifiedPair, index: int, out: str, size: tuple[int, int]):
    from labeler.stages import StageFailure

    if pair.status != "ok":
        return StageFailure(pair.pair_id, index, "rectify", pair.error or "failed")
    return load_stage(_task_from_rectified(pair, index, Path(out) / "rectified"), expected_size=size)


def _disparity_on_worker(loaded: list, stereo, gpus):
    from pipelines.cluster import worker_device

    return disparity_batch_stage(loaded, stereo, worker_device(gpus))


def _label_on_worker(disps: list, masks, settings, gpus):
    from pipelines.cluster import worker_device

    return label_batch_stage(disps, masks, settings, worker_device(gpus))


def _write(out, shard, layout, key, batches: list[list], *, previews: bool, rectified: list):
    """The shard's single writer, over the results of all its batches."""
    return write_stage(
        out,
        shard,
        layout,
        key,
        [s for batch in batches for s in batch],
        previews=previews,
        rectified=rectified,
    )


def _failed_record(rec: SampleRecord):
    from labeler.stages import StageFailure

    return [StageFailure(rec.sample_id, rec.index or 0, *(rec.error or "failed: unknown").split(": ", 1))]


def build_graph(
    cfg: PseudoLabelConfig, shards: dict[int, list[Item]], layout: StoreLayout, key: str, settings, size
) -> dict:
    """{shard: its single write task}. Within a shard, samples go through the backends `batch_size` at a
    time (one GPU forward per batch); in run mode each write also records its pairs' rectification."""
    import dask
    from dask.base import tokenize

    out = str(cfg.out)
    resources = {"resources": {"GPU": 1}} if cfg.gpus else {}
    writes = {}
    for shard, items in shards.items():
        batches, rectified = [], []
        todo = [it for it in items if it.failed is None]
        for it in items:
            if it.failed is not None:
                tok = tokenize(it.sample_id, it.index, key)
                batches.append(
                    dask.delayed(_failed_record, pure=True)(it.failed, dask_key_name=f"failed-{tok}")
                )
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start : start + cfg.batch_size]
            loaded = []
            for it in chunk:
                tok = tokenize(it.sample_id, it.index, key)
                if it.raw is not None:
                    rect = dask.delayed(_rectify)(it.raw, str(cfg.calib), out, dask_key_name=f"rectify-{tok}")
                    rectified.append(rect)
                    loaded.append(
                        dask.delayed(_load_rectified)(rect, it.index, out, size, dask_key_name=f"load-{tok}")
                    )
                else:
                    loaded.append(
                        dask.delayed(load_stage)(it.task, expected_size=size, dask_key_name=f"load-{tok}")
                    )
            tok = tokenize([(it.sample_id, it.index) for it in chunk], key)
            with dask.annotate(retries=1, **resources):
                disp = dask.delayed(_disparity_on_worker)(
                    loaded, cfg.stereo, cfg.gpus, dask_key_name=f"disparity-{tok}"
                )
                batches.append(
                    dask.delayed(_label_on_worker)(
                        disp, cfg.masks, settings, cfg.gpus, dask_key_name=f"label-{tok}"
                    )
                )
        writes[shard] = dask.delayed(_write)(
            out,
            shard,
            layout,
            key,
            batches,
            previews=cfg.previews,
            rectified=rectified,
            dask_key_name=f"write-{tokenize(shard, key, [i.sample_id for i in items])}",
        )
    return writes


def assemble_manifest(parts: dict[int, ShardPart], base: Manifest) -> Manifest:
    samples = sorted(
        (s for p in parts.values() for s in p.samples), key=lambda s: (s.index is None, s.index, s.sample_id)
    )
    digest_text = json.dumps(
        [[s.sample_id, s.status, s.digests.model_dump() if s.digests else None] for s in samples]
    )
    version = hashlib.sha256((base.dataset_version + digest_text).encode()).hexdigest()
    return base.model_copy(update={"samples": samples, "dataset_version": version})


def run_pseudo_label(cfg: PseudoLabelConfig) -> Manifest:
    """Label every pair under cfg.inputs into cfg.out (resuming earlier runs); returns the manifest."""
    import dask
    from tqdm import tqdm

    from labeler.calibration import load_calibration
    from labeler.depth import depth_settings
    from labeler.io import sha256_file, write_text_atomic
    from labeler.previews import write_gallery
    from labeler.shards import MANIFEST_NAME, prepare_store, store_layout
    from pipelines.cluster import dask_client

    _check_gpus(cfg)
    calib = load_calibration(cfg.calib)
    calib_sha = sha256_file(cfg.calib)
    settings = depth_settings(calib, z_far_m=cfg.z_far_m)
    key = run_key(cfg, calib_sha, settings.model_dump_json())
    _refuse_other_settings(cfg.out, key)
    items, parts = plan(cfg, key)
    if not items:
        raise InputError(cfg.inputs, "no pairs to label", "check the folder")
    w, h = calib.image_size
    layout = store_layout(max(i.index for i in items) + 1, h, w, cfg.samples_per_shard)
    base = Manifest(
        dataset_version=key,
        labeler_version=metadata.version("labeler"),
        calibration=calib,
        calibration_sha256=calib_sha,
        depth=settings,
        stereo=cfg.stereo,
        masks=cfg.masks,
        library_versions=library_versions(),
        layout=layout,
        samples=[],
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    prepare_store(cfg.out, layout)
    by_shard: dict[int, list[Item]] = {}
    for it in items:
        by_shard.setdefault(it.index // cfg.samples_per_shard, []).append(it)
    done = {
        s: parts[s] for s, its in by_shard.items() if shard_is_done(parts.get(s), its, cfg, cfg.out, base)
    }
    todo = {s: its for s, its in by_shard.items() if s not in done}
    writes = build_graph(cfg, todo, layout, key, settings, (w, h))
    finished = dict(done)

    def save_manifest() -> Manifest:
        manifest = assemble_manifest(finished, base)
        write_text_atomic(cfg.out / MANIFEST_NAME, manifest.model_dump_json(indent=1))
        return manifest

    n_todo = sum(len(v) for v in todo.values())
    with (
        dask_client(cfg.scheduler, workers=cfg.workers, gpus=cfg.gpus) as client,
        tqdm(total=n_todo, desc="pseudo-label", unit="sample", disable=not cfg.progress) as bar,
    ):
        if client is None:
            for shard, delayed_write in writes.items():
                (finished[shard],) = dask.compute(delayed_write, scheduler="sync")
                bar.update(len(todo[shard]))
                save_manifest()
        else:
            from distributed import as_completed

            futures = client.compute(list(writes.values()))
            shard_of = {f.key: s for f, s in zip(futures, writes, strict=True)}
            for fut in as_completed(futures):
                part = fut.result()
                finished[shard_of[fut.key]] = part
                bar.update(len(part.samples))
                save_manifest()  # a killed run keeps every shard finished so far
    if cfg.rectify:
        _write_pairs_json(cfg, calib, calib_sha, [p for part in finished.values() for p in part.rectified])
    manifest = save_manifest()
    write_gallery(cfg.out, manifest)
    return manifest


def _check_gpus(cfg: PseudoLabelConfig) -> None:
    """--gpu on a local cluster needs those devices here (an external cluster's workers have their own)."""
    if not cfg.gpus or (cfg.scheduler and "://" in cfg.scheduler):
        return
    import torch

    from labeler.errors import LabelerError

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in cfg.gpus if g >= n]
    if missing:
        raise LabelerError(
            f"--gpu {','.join(map(str, cfg.gpus))}: CUDA device {missing[0]} not found "
            f"({n} visible); drop --gpu to run on the CPU, or name a visible device"
        )


def _refuse_other_settings(out: Path, key: str) -> None:
    """A dataset folder holds one set of labels: other backends or calibration need another --out."""
    from labeler.shards import load_manifest

    if not (out / "manifest.json").is_file():
        return
    old = load_manifest(out)
    if old.samples and not load_parts(out, key):
        raise InputError(
            out,
            f"holds a dataset made with other settings (stereo {old.stereo.name}, masks "
            f"{old.masks.name}, calibration {old.calibration.rig}, or other parameters)",
            "use a new --out",
        )


def _write_pairs_json(cfg: PseudoLabelConfig, calib, calib_sha: str, pairs: list[RectifiedPair]) -> None:
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
