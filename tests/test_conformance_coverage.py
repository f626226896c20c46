"""Every registered stereo and mask backend runs its conformance suite: a backend registered without a
`StereoBackendTests` / `MaskBackendTests` subclass somewhere under tests/ fails here."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from labeler.segment.base import MASK_BACKENDS
from labeler.stereo.base import STEREO_BACKENDS
from labeler.testing.conformance import MaskBackendTests, StereoBackendTests

TESTS = Path(__file__).resolve().parent


def suites(base: type) -> list[type]:
    """The subclasses of `base` defined in the test modules under tests/ (each module imported afresh,
    under a private name, so pytest's own copy is left alone)."""
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if base.__name__ not in path.read_text():
            continue
        name = "_conformance_coverage." + ".".join(path.relative_to(TESTS).with_suffix("").parts)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and typing look their module up while it executes
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[name]
        found += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base
        ]
    return found


def without_suite(registered: Iterable[str], suite_classes: Iterable[type]) -> list[str]:
    """Registered names no suite declares as its `backend_name`."""
    covered = {getattr(cls, "backend_name", None) for cls in suite_classes}
    return sorted(set(registered) - covered)


@pytest.mark.parametrize(
    ("registry", "base"),
    [(STEREO_BACKENDS, StereoBackendTests), (MASK_BACKENDS, MaskBackendTests)],
    ids=["stereo", "masks"],
)
def test_every_registered_backend_has_a_conformance_suite(registry, base) -> None:
    import labeler.segment  # noqa: F401 — registers the mask backends
    import labeler.stereo  # noqa: F401 — registers the stereo backends

    found = suites(base)
    assert registry.names() and found
    uncollected = [cls.__name__ for cls in found if not cls.__name__.startswith("Test")]
    assert not uncollected, f"pytest collects only classes named Test*: {uncollected}"
    missing = without_suite(registry.names(), found)
    assert not missing, f"no {base.__name__} subclass under tests/ has backend_name in {missing}"
    unknown = {cls.backend_name for cls in found} - set(registry.names())
    assert not unknown, f"suites name backends that are not registered: {sorted(unknown)}"


def test_a_backend_without_a_suite_is_reported() -> None:
    """The check above is not vacuous: one more registered name, and it is the one reported."""
    import labeler.stereo  # noqa: F401

    found = suites(StereoBackendTests)
    assert without_suite([*STEREO_BACKENDS.names(), "new-matcher"], found) == ["new-matcher"]
    assert without_suite(STEREO_BACKENDS.names(), found[:0]) == STEREO_BACKENDS.names()
