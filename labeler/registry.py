"""A small name -> backend class registry (timm's shape; a duplicate name is an error, not a warning).

A registry builds its backends: `create(config, device=...)` picks the class by `config.name`, and
`shared(...)` keeps one instance per process, config and device, so a worker loads a model once.

A backend's name is written once, as the `name` literal of its config record (data_schema/backends.py):
the class names its `config_type`, and `register` takes the name from there.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel


class DuplicateBackendError(ValueError):
    """Two backends registered under one name."""


class UnknownBackendError(KeyError):
    """No backend registered under that name."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0])


class NamedConfig(Hashable, Protocol):
    """What selects and configures a backend: a frozen (hashable) record whose `name` is the backend's."""

    @property
    def name(self) -> str: ...


C = TypeVar("C", bound=BaseModel)


class Backend(ABC, Generic[C]):
    """What a registry builds, from its own config record `C`. The stereo and mask interfaces derive from
    this; a concrete backend sets `config_type` (its record) and gets `name` from it when registered."""

    config_type: ClassVar[type[BaseModel]]
    name: ClassVar[str]  # set by `Registry.register` from config_type's `name` literal
    # CPU-only backends run on the CPU even in a `--gpu` run (e.g. `--stereo sgbm --masks sam2 --gpu 0`).
    uses_cuda: ClassVar[bool] = True

    @abstractmethod
    def __init__(self, config: C, *, device: str) -> None:
        """Build from the backend's own config record; `device` is "cpu" or a CUDA device ("cuda:1")."""

    @classmethod  # noqa: B027 — an optional hook: most backends have nothing to check
    def check_config(cls, config: C) -> None:
        """Raise a one-line LabelerError when `config` cannot work (e.g. a named file is missing).

        Called once before the first sample, so a bad flag fails the run instead of every sample.
        The default has nothing to check.
        """


T = TypeVar("T", bound=Backend[Any])


def config_name(config_type: type[BaseModel]) -> str:
    """The backend name a config record carries: the default of its `name` literal."""
    field = config_type.model_fields.get("name")
    if field is None or not isinstance(field.default, str):
        raise TypeError(f"{config_type.__name__} has no `name` literal with a default")
    return field.default


class Registry(Generic[T]):
    """Maps backend names to classes. Registration happens when a backend module is imported."""

    def __init__(self, kind: str, *, shared_size: int = 4) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        # A few live backends per process: a long-lived worker that sees many configs frees old models.
        self._shared = functools.lru_cache(maxsize=shared_size)(self._create)
        # the CPU's default cluster runs tasks in threads: two first tasks must not load a model twice
        self._building = threading.RLock()

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: registers `cls` under its config's name (and sets `cls.name`)."""
        name = config_name(cls.config_type)
        if name in self._classes:
            raise DuplicateBackendError(
                f"{self.kind} backend {name!r} is registered twice "
                f"({self._classes[name].__module__} and {cls.__module__})"
            )
        cls.name = name
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; choose one of: {', '.join(sorted(self._classes))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def create(self, config: NamedConfig, *, device: str) -> T:
        """A new backend: `config.name` selects the class; a CPU-only one (`uses_cuda = False`) gets "cpu"."""
        cls = self.get(config.name)
        return cls(config, device=device if cls.uses_cuda else "cpu")

    def shared(self, config: NamedConfig, *, device: str) -> T:
        """The backend of `config` on `device`, built once per process (so one model load per worker)."""
        with self._building:
            return self._shared(config, device)

    def check(self, config: NamedConfig) -> None:
        """The selected class's `check_config`: fail before any sample when `config` cannot work."""
        self.get(config.name).check_config(config)

    def _create(self, config: NamedConfig, device: str) -> T:
        return self.create(config, device=device)
