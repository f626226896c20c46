"""The local cluster is quiet unless --verbose, and binds no dashboard port on a short run."""

from __future__ import annotations

import logging
import os

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
    with dask_client(None, workers=1, gpus=(), samples=small, in_process_below=small) as client:
        assert client is not None and client.submit(int, "7").result() == 7
    with dask_client("processes", workers=1, gpus=(), samples=1) as client:
        assert client is not None
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 1  # one single-threaded worker process...
        assert client.submit(os.getpid, pure=False).result() not in (os.getpid(), None)  # ...not this one
