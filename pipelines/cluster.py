"""Where the DAG runs: a LocalCluster (processes or threads), an existing scheduler, or in-process sync.

Quiet by default: Dask's INFO chatter (scheduler start, nanny and worker registration, shutdown) is not
the user's news. Dask logs come back when the root logger is at DEBUG (`labeler --verbose`), in the
worker processes too. Errors always show.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

# A run of this many samples takes minutes even on a GPU: long enough to watch on the dashboard.
DASHBOARD_MIN_SAMPLES = 100
DASHBOARD_ADDRESS = "127.0.0.1:8787"  # Dask's usual port; Dask takes a free one when it is in use
# Below this many samples the default runs in-process: starting a process cluster (~3-5 s of CPU for the
# scheduler and two workers importing cv2/torch) costs more than a second core saves on ~1 s samples.
IN_PROCESS_BELOW_SAMPLES = 16


@contextmanager
def dask_client(
    scheduler: str | None,
    *,
    workers: int | None,
    gpus: tuple[int, ...],
    samples: int = 0,
    in_process_below: int = IN_PROCESS_BELOW_SAMPLES,
) -> Iterator[Client | None]:
    """Yield a distributed Client, or None to run in-process (`scheduler="sync"`, and small default runs).

    scheduler: None → LocalCluster of processes, or in-process when `samples < in_process_below` (a
    cluster there costs more than it saves; `--scheduler processes` forces one); "processes" →
    LocalCluster of processes; "threads" → LocalCluster of threads; "tcp://host:port" → an existing
    cluster (start one worker per GPU there with `--resources GPU=1`).
    With gpus, the local cluster has one worker per GPU, each advertising GPU=1 so that one model task runs
    on it at a time, with the machine's other cores as its extra threads (`--workers` sets the total): the
    CPU tasks (loading, depth, objects, previews, writes) run there beside the model calls, so the GPU never
    waits on them.
    samples: how many samples the run computes. A local cluster serves the Dask dashboard (it needs
    bokeh) and logs its address once with --verbose or from DASHBOARD_MIN_SAMPLES samples on; otherwise
    nothing listens on :8787.
    """
    if scheduler == "sync" or (scheduler is None and samples < in_process_below):
        yield None
        return
    from distributed import Client, LocalCluster

    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with _dask_logs_quiet(not verbose):
        if scheduler is not None and "://" in scheduler:
            with Client(scheduler) as client:
                yield client
            return
        cores = workers or max(1, min(os.cpu_count() or 1, 8))
        n = len(gpus) if gpus else cores
        threads = max(2, cores // len(gpus)) if gpus else 1
        kwargs: dict[str, Any] = {"resources": {"GPU": 1}} if gpus else {}
        dashboard = _dashboard_wanted(verbose, samples)
        if not dashboard:
            # The scheduler's HTTP server (health, metrics) still starts: on a free port, not Dask's 8787.
            kwargs["scheduler_kwargs"] = {"dashboard_address": "127.0.0.1:0"}
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=threads,
                processes=scheduler != "threads",
                dashboard_address=DASHBOARD_ADDRESS if dashboard else None,
                silence_logs=logging.INFO if verbose else logging.ERROR,  # the worker processes' level
                **kwargs,
            ) as cluster,
            Client(cluster) as client,
        ):
            if dashboard:
                log.info("Dask dashboard: %s", client.dashboard_link)
            yield client


def _dashboard_wanted(verbose: bool, samples: int) -> bool:
    if not (verbose or samples >= DASHBOARD_MIN_SAMPLES):
        return False
    if not _has_bokeh():
        log.debug("no Dask dashboard: it needs bokeh (pip install bokeh)")
        return False
    return True


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


@contextmanager
def _dask_logs_quiet(quiet: bool) -> Iterator[None]:
    """Raise Dask's loggers (which Dask sets to INFO when imported) to ERROR for the block, then restore."""
    if not quiet:
        yield
        return
    saved = [
        (lg, lg.level)
        for name, lg in logging.root.manager.loggerDict.items()
        if name.split(".")[0] in ("distributed", "bokeh", "tornado")
        and isinstance(lg, logging.Logger)
        and logging.NOTSET < lg.level < logging.ERROR
    ]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


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
