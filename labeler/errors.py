"""Errors that carry one user-facing line: the file, the problem, the fix."""

from __future__ import annotations

import errno
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


_DISK_FIXES = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "make that file system writable",
    errno.EACCES: "make that folder writable for you",
}


def disk_error(err: OSError, where: str | Path, doing: str = "") -> LabelerError | None:
    """One line for a disk that is full, read-only or not ours (None for other OS errors).

    Stages commit atomically, so what was finished is kept and the same command resumes once the disk is
    writable again; the line says so.
    """
    fix = _DISK_FIXES.get(err.errno or 0)
    if fix is None:
        return None
    then = f"{fix}, then run the command again"
    if doing:
        return LabelerError(f"{where}: cannot write {doing} ({err.strerror}); {then}")
    return LabelerError(f"{err.filename or where}: {err.strerror}; {then}")
