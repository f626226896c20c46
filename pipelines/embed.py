"""`labeler embed` on Dask: per dataset shard not yet embedded, load → model → write, then the run commits
the shard (labeler/dataset/embeddings.py), so an interrupted run resumes at the first shard without an
index line.

The load task reads and verifies the shard's images and masks and resizes them to the model's input; the
model task alone takes the worker's GPU (`resources={"GPU": 1}` with `--gpu`) and hands back only the
embeddings; the write task is the shard's single writer of its chunk of `samples.zarr` and its objects
file. Task keys come from the embeddings' key and the shard's content, so a re-run names the same work the
same way. Each worker builds the ViT once (`_vit`). On a GPU:
`labeler embed DATASET --backbone vits --weights dinov2_vits14_pretrain.pth --gpu 0 --batch-size 64`
(`--gpu 0,1`: one worker per GPU, shards spread over both).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_schema.curation import EmbedConfig, EmbeddingSet, EmbeddingShard
from data_schema.heads import Backbone
from data_schema.manifest import ShardEntry
from labeler.review.embed import PreparedShard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedRun:
    record: EmbeddingSet
    n_shards: int
    n_embedded: int  # shards embedded now (the others were done before)
    n_samples: int
    n_objects: int
    seconds: float
    failed: dict[int, str] = field(default_factory=dict)  # shard -> why its tasks failed (not committed)


@functools.lru_cache(maxsize=2)
def _open(dataset: str, version: str) -> Any:
    """The dataset's reader once per worker process and dataset version."""
    from labeler.dataset.reader import open_dataset

    return open_dataset(dataset)


@functools.lru_cache(maxsize=1)
def _vit(backbone: Backbone, weights: str | None, sha256: str | None, seed: int, device: str) -> Any:
    """The ViT once per worker process, weights (by content) and device."""
    from labeler.review.embed import build_backbone

    vit, _, _ = build_backbone(backbone, Path(weights) if weights else None, seed=seed)
    return vit.to(device)


def _load(dataset: str, version: str, entry: ShardEntry, size: tuple[int, int]) -> PreparedShard:
    from labeler.review.embed import prepare_shard

    return prepare_shard(_open(dataset, version), entry, size)


def _embed(prep: PreparedShard, cfg: EmbedConfig, record: EmbeddingSet) -> Any:
    from labeler.review.embed import embed_shard
    from pipelines.cluster import worker_device

    device = worker_device(cfg.gpus)
    vit = _vit(cfg.backbone, record.weights, record.weights_sha256, cfg.seed, device)
    return embed_shard(vit, prep, batch_size=cfg.batch_size, device=device)


def _write(dataset: str, key: str, entry: ShardEntry, prep: PreparedShard, embedded: Any) -> EmbeddingShard:
    from labeler.dataset.embeddings import write_embedding_files

    samples, objects = embedded
    return write_embedding_files(dataset, key, entry, prep.rows, samples, objects)


def build_embed_graph(
    cfg: EmbedConfig, record: EmbeddingSet, entries: list[ShardEntry], size: tuple[int, int]
) -> dict[int, Any]:
    """{shard: its write task}, each over its own load and model tasks (the GPU annotation on the model
    task only, with cfg.gpus)."""
    import dask
    from dask.base import tokenize

    dataset, key = str(cfg.dataset), record.key
    gpu = {"resources": {"GPU": 1}} if cfg.gpus else {}
    writes = {}
    for entry in entries:
        tok = tokenize(key, entry.shard, entry.content_sha256)
        prep = dask.delayed(_load)(
            dataset, record.dataset_version, entry, size, dask_key_name=f"embed-load-{tok}"
        )
        with dask.annotate(retries=1, **gpu):
            embedded = dask.delayed(_embed)(prep, cfg, record, dask_key_name=f"embed-model-{tok}")
        writes[entry.shard] = dask.delayed(_write)(
            dataset, key, entry, prep, embedded, dask_key_name=f"embed-write-{tok}"
        )
    return writes


def _record(cfg: EmbedConfig, dataset_version: str) -> EmbeddingSet:
    """The embeddings' record; builds the ViT here first, so a bad checkpoint is one line before any task."""
    from labeler.review.embed import build_backbone, embedding_key

    vit, lic, sha = build_backbone(cfg.backbone, cfg.weights, seed=cfg.seed)
    fields: dict[str, object] = {
        "backbone": cfg.backbone,
        "weights_sha256": sha,
        "seed": cfg.seed if sha is None else None,
        "input_size": cfg.input_size,
        "dataset": dataset_version,
    }
    return EmbeddingSet(
        key=embedding_key(fields),
        backbone=cfg.backbone,
        weights=str(cfg.weights) if cfg.weights is not None else None,
        weights_sha256=sha,
        seed=cfg.seed,
        input_size=cfg.input_size,
        embed_dim=vit.embed_dim,
        dataset_version=dataset_version,
        licence=lic,
    )


def run_embed(cfg: EmbedConfig, *, stop_after_shards: int | None = None) -> EmbedRun:
    """Embed every shard not yet embedded under these settings; `stop_after_shards` (tests: an interrupted
    run) embeds at most that many."""
    from labeler.dataset.embeddings import begin_embeddings, commit_embedding_shard
    from labeler.dataset.reader import open_dataset
    from labeler.review.embed import input_shape
    from pipelines.cluster import check_gpus, check_scheduler_answers

    start = time.perf_counter()
    check_gpus(cfg.gpus, cfg.scheduler)
    check_scheduler_answers(cfg.scheduler)
    ds = open_dataset(cfg.dataset)
    record = _record(cfg, ds.version)
    done = begin_embeddings(cfg.dataset, record, ds.manifest)
    todo = [e for e in ds.entries if e.shard not in done][:stop_after_shards]
    width, height = ds.manifest.calibration.image_size
    writes = build_embed_graph(cfg, record, todo, input_shape(width, height, cfg.input_size))
    ok = {e.shard: e.n_ok for e in todo}
    committed: list[EmbeddingShard] = []
    failed: dict[int, str] = {}

    def finish(shard: int, result: Any) -> None:
        try:
            line: EmbeddingShard = result()
        except Exception as err:  # noqa: BLE001 — this shard stays un-embedded; the others go on
            failed[shard] = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            log.warning("%s: shard %d not embedded (%s)", cfg.dataset, shard, failed[shard])
            return
        commit_embedding_shard(cfg.dataset, line)
        committed.append(line)

    _compute(cfg, writes, ok, finish)
    return EmbedRun(
        record=record,
        n_shards=len(ds.entries),
        n_embedded=len(committed),
        n_samples=sum(len(c.rows) for c in committed),
        n_objects=sum(c.n_objects for c in committed),
        seconds=time.perf_counter() - start,
        failed=failed,
    )


def _compute(cfg: EmbedConfig, writes: dict[int, Any], ok: dict[int, int], finish: Any) -> None:
    """Run the write tasks on the cluster `cfg` names (in-process for small runs), calling
    `finish(shard, result)` as each shard's chain completes."""
    from tqdm import tqdm

    from pipelines.cluster import dask_client

    n = sum(ok.values())
    with (
        dask_client(cfg.scheduler, workers=cfg.workers, gpus=cfg.gpus, samples=n) as client,
        tqdm(total=n, desc="embed", unit="sample", disable=not cfg.progress) as bar,
    ):
        if client is None:
            for shard, write in writes.items():
                finish(shard, functools.partial(_compute_sync, write))
                bar.update(ok[shard])
            return
        from distributed import as_completed

        futures = client.compute(list(writes.values()))
        shard_of = {f.key: s for f, s in zip(futures, writes, strict=True)}
        for fut in as_completed(futures):
            finish(shard_of[fut.key], fut.result)
            bar.update(ok[shard_of[fut.key]])


def _compute_sync(write: Any) -> EmbeddingShard:
    import dask

    (line,) = dask.compute(write, scheduler="sync")
    return line
