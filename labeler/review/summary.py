"""One line on a dataset's review state, for `labeler validate`'s output."""

from __future__ import annotations

from pathlib import Path


def review_summary(dataset: str | Path) -> str:
    """The review decisions in force and the stale ones, as one line (`labeler validate` prints it)."""
    from labeler.dataset.decisions import load_decisions
    from labeler.dataset.reader import open_dataset

    return load_decisions(open_dataset(dataset)).summary()
