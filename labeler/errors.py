"""Errors that carry one user-facing line: the file, the problem, the fix."""

from __future__ import annotations

from pathlib import Path


class LabelerError(Exception):
    """Base for errors printed to the user as one line (no traceback)."""


class InputError(LabelerError, ValueError):
    """A bad input file: `<path>: <problem>; <fix>`."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}; {fix}")


class WeightsError(LabelerError, FileNotFoundError):
    """Model weights missing or not what was expected; names the flag to pass."""
