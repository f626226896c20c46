"""A small name -> backend class registry (timm's shape; a duplicate name is an error, not a warning)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateBackendError(ValueError):
    """Two backends registered under one name."""


class UnknownBackendError(KeyError):
    """No backend registered under that name."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps backend names to classes. Registration happens when a backend module is imported."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise DuplicateBackendError(
                    f"{self.kind} backend {name!r} is registered twice "
                    f"({self._classes[name].__module__} and {cls.__module__})"
                )
            self._classes[name] = cls
            return cls

        return add

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; choose one of: {', '.join(sorted(self._classes))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._classes)
