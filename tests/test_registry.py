"""Registries build their backends from a config: class by `config.name`, CPU-only ones on the CPU."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from data_schema.record import Record
from labeler.errors import LabelerError
from labeler.registry import Backend, DuplicateBackendError, Registry, UnknownBackendError


class GpuConfig(Record):
    name: Literal["gpu-ish"] = "gpu-ish"
    size: int = 1
    weights: str | None = None


class CpuConfig(Record):
    name: Literal["cpu-only"] = "cpu-only"


REG: Registry[Backend[Any]] = Registry("test")


@REG.register
class GpuBackend(Backend[GpuConfig]):
    config_type = GpuConfig
    built = 0

    def __init__(self, config: GpuConfig, *, device: str) -> None:
        self.config, self.device = config, device
        type(self).built += 1

    @classmethod
    def check_config(cls, config: GpuConfig) -> None:
        if config.weights is None:
            raise LabelerError("gpu-ish needs --weights")


@REG.register
class CpuBackend(Backend[CpuConfig]):
    config_type = CpuConfig
    uses_cuda = False

    def __init__(self, config: CpuConfig, *, device: str) -> None:
        self.device = device


def test_create_picks_the_class_by_name_and_keeps_cpu_only_backends_on_the_cpu():
    gpu = REG.create(GpuConfig(size=3), device="cuda:1")
    assert isinstance(gpu, GpuBackend) and gpu.device == "cuda:1" and gpu.config.size == 3
    cpu = REG.create(CpuConfig(), device="cuda:1")
    assert isinstance(cpu, CpuBackend) and cpu.device == "cpu"


def test_shared_builds_once_per_config_and_device():
    before = GpuBackend.built
    a = REG.shared(GpuConfig(size=2), device="cuda:0")
    assert REG.shared(GpuConfig(size=2), device="cuda:0") is a  # an equal config: the same model
    assert REG.shared(GpuConfig(size=5), device="cuda:0") is not a
    assert REG.shared(GpuConfig(size=2), device="cuda:1") is not a
    assert GpuBackend.built - before == 3


def test_check_runs_the_selected_class_check():
    REG.check(CpuConfig())  # the default check: nothing to check
    REG.check(GpuConfig(weights="w.pth"))
    with pytest.raises(LabelerError, match="gpu-ish needs --weights"):
        REG.check(GpuConfig())


def test_unknown_and_duplicate_names():
    with pytest.raises(
        UnknownBackendError, match="unknown test backend 'nope'; choose one of: cpu-only, gpu-ish"
    ):
        REG.get("nope")
    with pytest.raises(DuplicateBackendError, match="'cpu-only' is registered twice"):
        REG.register(CpuBackend)


def test_a_backend_takes_its_name_from_its_config_record():
    """The name is written once, as the config's `name` literal; register sets the class's from it."""
    assert GpuBackend.name == "gpu-ish" and CpuBackend.name == "cpu-only"
    from data_schema.backends import ClassicalMasksConfig, SgbmConfig
    from labeler.segment.base import MASK_BACKENDS
    from labeler.stereo.base import STEREO_BACKENDS

    assert STEREO_BACKENDS.get("sgbm").config_type is SgbmConfig
    assert MASK_BACKENDS.get("classical").config_type is ClassicalMasksConfig
    for reg in (STEREO_BACKENDS, MASK_BACKENDS):
        for name in reg.names():
            assert reg.get(name).name == name


class SlowConfig(Record):
    name: Literal["slow"] = "slow"


@REG.register
class SlowBackend(Backend[SlowConfig]):
    config_type = SlowConfig
    uses_cuda = False
    built: list[SlowBackend] = []

    def __init__(self, config: SlowConfig, *, device: str) -> None:
        import time

        time.sleep(0.2)  # a model load
        type(self).built.append(self)


def test_a_shared_backend_is_built_once_when_threads_ask_together():
    """The CPU's default cluster runs tasks in threads: the first tasks of a run ask for the backend at
    the same moment, and it must be built (a model loaded) once."""
    import threading

    got: list[object] = []
    threads = [
        threading.Thread(target=lambda: got.append(REG.shared(SlowConfig(), device="cpu"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(SlowBackend.built) == 1 and len(got) == 4 and all(g is SlowBackend.built[0] for g in got)
