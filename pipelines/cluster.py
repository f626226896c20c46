"""Where the DAG runs: a LocalCluster (processes or threads), an existing scheduler, or in-process sync.

Quiet by default: Dask's INFO chatter (scheduler start, nanny and worker registration, shutdown) is not
the user's news. Dask logs come back when the root logger is at DEBUG (`labeler --verbose`), in the
worker processes too. A task that fails reaches the run as its exception (one line, or a recorded sample
failure); Dask's own report of it, with the task's traceback, shows only with --verbose.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

from data_schema.commands import scheduler_problem
from labeler.errors import LabelerError

log = logging.getLogger(__name__)

# How long a remote scheduler has to accept the connection and say hello, s.
CONNECT_TIMEOUT_S = 10.0
_MAX_HELLO_BYTES = 1 << 20  # a Dask handshake is ~60 bytes; anything that announces more is not one

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

    scheduler: None → a LocalCluster, or in-process when `samples < in_process_below` (a cluster there
    costs more than it saves; `--scheduler processes` forces one): of threads on the CPU (the stages spend
    their time in OpenCV, numpy, zarr and hashlib, which release the GIL, and a process cluster ships
    every labelled sample's arrays to its shard's writer: 1.3-1.7x slower per pair on 2 cores,
    benchmarks/RESULTS.md, issue 27), of processes with --gpu (one per GPU); "processes" → LocalCluster
    of processes; "threads" → LocalCluster of threads; "tcp://host:port" → an existing
    cluster (start one worker per GPU there with `--resources GPU=1`).
    With gpus, the local cluster has one worker per GPU, each advertising GPU=1 so that one model task runs
    on it at a time, with the machine's other cores as its extra threads (`--workers` sets the total): the
    CPU tasks (loading, depth, objects, previews, writes) run there beside the model calls, so the GPU never
    waits on them.
    samples: how many samples the run computes. A local cluster serves the Dask dashboard (it needs
    bokeh) and logs its address once with --verbose or from DASHBOARD_MIN_SAMPLES samples on; otherwise
    nothing listens on :8787.
    """
    problem = None if scheduler is None else scheduler_problem(scheduler)
    if problem:
        raise LabelerError(f"--scheduler {problem}; start one with `dask scheduler` or leave the flag out")
    if scheduler == "sync" or (scheduler is None and samples < in_process_below):
        yield None
        return
    from distributed import Client, LocalCluster

    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    with _dask_logs_quiet(not verbose):
        if scheduler is not None and "://" in scheduler:
            check_scheduler(scheduler)
            with Client(scheduler, timeout=CONNECT_TIMEOUT_S) as client:
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
                processes=scheduler == "processes" or (scheduler is None and bool(gpus)),
                dashboard_address=DASHBOARD_ADDRESS if dashboard else None,
                # the worker processes' level: a failed task reaches the run as its exception (one line
                # there); Dask's "Compute Failed" report with the task's traceback only with --verbose
                silence_logs=logging.INFO if verbose else logging.CRITICAL,
                **kwargs,
            ) as cluster,
            Client(cluster) as client,
        ):
            if dashboard:
                log.info("Dask dashboard: %s", client.dashboard_link)
            yield client


def check_gpus(gpus: tuple[int, ...], scheduler: str | None) -> None:
    """--gpu on a local cluster needs those devices here (an external cluster's workers have their own)."""
    if not gpus or (scheduler and "://" in scheduler):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in gpus if g >= n]
    if missing:
        raise LabelerError(
            f"--gpu {','.join(map(str, gpus))}: CUDA device {missing[0]} not found "
            f"({n} visible); drop --gpu to run on the CPU, or name a visible device"
        )


def check_scheduler_answers(scheduler: str | None) -> None:
    """Before a command writes anything: a --scheduler address that no Dask scheduler answers is one line
    (the handshake probe of `check_scheduler`, then a client connection with a timeout)."""
    if not scheduler or "://" not in scheduler:
        return
    from distributed import Client

    check_scheduler(scheduler)  # Dask's own connect hangs on a port that is not Dask's
    try:
        Client(scheduler, timeout=10).close()
    except (OSError, TimeoutError) as err:
        raise LabelerError(
            f"--scheduler {scheduler}: no Dask scheduler answers there ({type(err).__name__}); start one "
            "(`dask scheduler`) or drop --scheduler to run a local cluster"
        ) from None


def check_scheduler(address: str, *, timeout_s: float | None = None) -> None:
    """Raise a one-line LabelerError unless a Dask scheduler answers at `address` within `timeout_s`.

    Dask's own connect waits forever on a port that accepts and stays silent, and reads a frame length
    from whatever another server sends (an HTTP server's bytes ask for exabytes). A scheduler speaks first:
    its handshake is one frame of ~60 bytes (uint64 total length, then the frames) naming its pickle
    protocol. For tls:// only the TCP connection is checked here; Dask's timeout covers the rest.
    """
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    protocol, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    fix = "start one with `dask scheduler`, or leave --scheduler out to run locally"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            if protocol != "tcp":
                return
            sock.settimeout(timeout_s)
            head = _read_exactly(sock, 8)
            (length,) = struct.unpack("<Q", head)
            hello = _read_exactly(sock, length) if 16 <= length <= _MAX_HELLO_BYTES else b""
    except TimeoutError:
        raise LabelerError(
            f"--scheduler {address}: no Dask scheduler answered within {timeout_s:g} s; {fix}"
        ) from None
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise LabelerError(
            f"--scheduler {address}: no Dask scheduler answers there ({reason}); {fix}"
        ) from None
    if b"pickle-protocol" not in hello:
        raise LabelerError(f"--scheduler {address}: what answers there is not a Dask scheduler; {fix}")


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("the connection was closed before a Dask handshake")
        data += chunk
    return data


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
    worker = logging.getLogger("distributed.worker")  # threads: "Compute Failed" and a traceback, as above
    saved.append((worker, worker.level))
    worker.setLevel(logging.CRITICAL)
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
