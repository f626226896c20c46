"""`labeler validate` on Dask: the per-shard checks of labeler/dataset/validate.py as one task per shard,
on the same kind of cluster as labelling (`--workers`, `--scheduler`), with a progress bar."""

from __future__ import annotations

from pathlib import Path

from data_schema.manifest import Manifest, ShardEntry
from labeler.dataset.validate import shard_problems, validate_dataset

# Checking a sample (decode, digests, statistics) costs about a tenth of labelling it: a process cluster
# pays for its start-up from some ten times more samples than a labelling run needs.
VALIDATE_IN_PROCESS_BELOW = 128


def run_validate(
    dataset: str | Path, *, scheduler: str | None = None, workers: int | None = None, progress: bool = True
) -> list[str]:
    from tqdm import tqdm

    from pipelines.cluster import dask_client

    def map_shards(entries: list[ShardEntry], manifest: Manifest) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in entries]
        with (
            dask_client(
                scheduler,
                workers=workers,
                gpus=(),
                samples=sum(e.n_ok + e.n_failed for e in entries),
                in_process_below=VALIDATE_IN_PROCESS_BELOW,
            ) as client,
            tqdm(total=len(entries), desc="validate", unit="shard", disable=not progress) as bar,
        ):
            if client is None:
                for k, e in enumerate(entries):
                    out[k] = shard_problems(dataset, e, manifest)
                    bar.update(1)
                return out
            from distributed import as_completed

            futures = client.map(shard_problems, [str(dataset)] * len(entries), entries, manifest=manifest)
            slot = {f.key: k for k, f in enumerate(futures)}
            for fut in as_completed(futures):
                out[slot[fut.key]] = fut.result()
                bar.update(1)
        return out

    return validate_dataset(dataset, map_shards=map_shards)
