"""Where the DAG runs: a LocalCluster (processes or threads), an existing scheduler, or in-process sync."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def dask_client(scheduler: str | None, *, workers: int | None, gpus: tuple[int, ...]):
    """Yield a distributed Client, or None for `scheduler="sync"` (in-process, for tests and debugging).

    scheduler: None or "processes" → LocalCluster of processes; "threads" → LocalCluster of threads;
    "tcp://host:port" → an existing cluster (start one worker per GPU there with `--resources GPU=1`).
    With gpus, the local cluster has one single-threaded worker per GPU, each advertising GPU=1.
    """
    if scheduler == "sync":
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None and "://" in scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = len(gpus) if gpus else (workers or max(1, min(os.cpu_count() or 1, 8)))
    kwargs = {"resources": {"GPU": 1}} if gpus else {}
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=scheduler != "threads",
            dashboard_address=None,
            silence_logs=40,
            **kwargs,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def worker_device(gpus: tuple[int, ...]) -> str:
    """The device of the worker running this task: cuda:<id> of its GPU, or cpu.

    Local workers are named 0..n-1, one per GPU; a worker of an external cluster takes LABELER_GPU
    (or the first GPU it can see).
    """
    if not gpus:
        return "cpu"
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not inside a worker: sync mode
        name = None
    if isinstance(name, int):
        return f"cuda:{gpus[name % len(gpus)]}"
    return f"cuda:{os.environ.get('LABELER_GPU', gpus[0])}"
