"""The local cluster is quiet unless --verbose, and binds no dashboard port on a short run."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from pipelines.cluster import DASHBOARD_ADDRESS, dask_client


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def dask_records():
    """Every record Dask's loggers let through (a handler on `distributed` sees them, propagating or not)."""
    import distributed  # noqa: F401 — Dask sets its logger levels when imported

    handler = _Records()
    logger = logging.getLogger("distributed")
    logger.addHandler(handler)
    root_level = logging.getLogger().level
    yield handler.records
    logger.removeHandler(handler)
    logging.getLogger().setLevel(root_level)


def _run_one_task(samples: int = 0) -> int:
    with dask_client("threads", workers=1, gpus=(), samples=samples) as client:
        assert client is not None
        assert client.submit(int, "41").result() == 41
        return client.cluster.scheduler.http_server.port


def test_quiet_by_default_and_no_dashboard_port(dask_records):
    logging.getLogger().setLevel(logging.INFO)  # the CLI's level without --verbose
    port = _run_one_task()
    assert [r.getMessage() for r in dask_records if r.levelno < logging.ERROR] == []
    assert port != int(DASHBOARD_ADDRESS.rsplit(":", 1)[1])
    assert logging.getLogger("distributed").level == logging.INFO  # Dask's own level is back afterwards


def test_verbose_brings_the_dask_logs_back(dask_records):
    logging.getLogger().setLevel(logging.DEBUG)  # labeler --verbose
    _run_one_task()
    messages = [r.getMessage() for r in dask_records if r.levelno == logging.INFO]
    assert any("Scheduler at" in m for m in messages)
    assert any("Register worker" in m for m in messages)


def test_a_long_run_prints_the_dashboard_address_once(monkeypatch, caplog):
    import pipelines.cluster as cluster

    monkeypatch.setattr(cluster, "_has_bokeh", lambda: True)  # the page itself is not what is tested
    with caplog.at_level(logging.INFO, logger="pipelines.cluster"):
        _run_one_task(samples=cluster.DASHBOARD_MIN_SAMPLES - 1)
        assert [r for r in caplog.records if "dashboard" in r.getMessage()] == []
        _run_one_task(samples=cluster.DASHBOARD_MIN_SAMPLES)
    (line,) = [r.getMessage() for r in caplog.records if "dashboard" in r.getMessage()]
    assert line.startswith("Dask dashboard: http://") and line.endswith("/status")


def test_a_small_default_run_stays_in_process_and_a_named_scheduler_does_not():
    """Issue 13: below IN_PROCESS_BELOW_SAMPLES the default (no --scheduler) starts no cluster (its start-up
    costs more than it saves); from there on, and whenever a scheduler is named, it does."""
    import pipelines.cluster as cluster

    small = cluster.IN_PROCESS_BELOW_SAMPLES - 1
    with dask_client(None, workers=1, gpus=(), samples=small) as client:
        assert client is None
    with dask_client(None, workers=2, gpus=(), samples=small, in_process_below=small) as client:
        assert client is not None and client.submit(int, "7").result() == 7
        # on the CPU the default cluster is of threads: two workers in this process
        pids = {
            client.submit(os.getpid, pure=False, workers=[w]).result()
            for w in client.scheduler_info()["workers"]
        }
        assert pids == {os.getpid()} and len(client.scheduler_info()["workers"]) == 2
    with dask_client("processes", workers=1, gpus=(), samples=1) as client:
        assert client is not None
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 1  # one single-threaded worker process...
        assert client.submit(os.getpid, pure=False).result() not in (os.getpid(), None)  # ...not this one


_RUNNING: dict[str, int] = {}
_MOST: dict[str, int] = {}
_LOCK = threading.Lock()


def _model_task(i: int) -> str:
    """A CPU stand-in for a model call: notes how many run at once on its worker's device."""
    from pipelines.cluster import worker_device

    device = worker_device((0, 1))
    with _LOCK:
        _RUNNING[device] = _RUNNING.get(device, 0) + 1
        _MOST[device] = max(_MOST.get(device, 0), _RUNNING[device])
    time.sleep(0.05)
    with _LOCK:
        _RUNNING[device] -= 1
    return device


def test_gpu_workers_each_take_one_gpu_and_one_model_task_at_a_time():
    """`--gpu 0,1` on a local cluster (CPU stand-in: threads, no CUDA touched): one worker per GPU, each
    advertising GPU=1, so the model tasks (annotated GPU=1) spread over both devices and never overlap on one
    worker, while its other threads stay free for CPU tasks."""
    _MOST.clear()
    with dask_client("threads", workers=4, gpus=(0, 1), samples=1) as client:
        assert client is not None
        workers = client.scheduler_info()["workers"].values()
        assert sorted(w["name"] for w in workers) == [0, 1]
        assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 2 for w in workers)
        futures = [client.submit(_model_task, i, resources={"GPU": 1}, pure=False) for i in range(8)]
        devices = client.gather(futures)
    assert sorted(set(devices)) == ["cuda:0", "cuda:1"]
    assert _MOST == {"cuda:0": 1, "cuda:1": 1}  # one model task per GPU at a time, though each has 2 threads
