"""Named selections (`DATASET/selections/<name>.json`) and the last curation report (`curation.json`).

A selection's name becomes a file name, so it must match `SELECTION_NAME_PATTERN` (letters, digits, `_.-`,
no path separators); a bad one is one line naming the rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import ValidationError

from data_schema.curation import SELECTION_NAME_PATTERN, CurationReport, Selection
from labeler.errors import LabelerError

SELECTIONS_DIR = "selections"
CURATION_NAME = "curation.json"


class SelectionError(LabelerError):
    """A selection that is missing, damaged or badly named."""


def check_name(name: str) -> str:
    if not re.match(SELECTION_NAME_PATTERN, name):
        raise SelectionError(
            f"selection name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with a letter or "
            "digit)"
        )
    return name


def selection_path(dataset: str | Path, name: str) -> Path:
    return Path(dataset) / SELECTIONS_DIR / f"{check_name(name)}.json"


def write_selection(dataset: str | Path, selection: Selection) -> Path:
    from labeler.io import write_text_atomic

    path = selection_path(dataset, selection.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, selection.model_dump_json(indent=1))
    return path


def read_selection(dataset: str | Path, name: str) -> Selection:
    """The named selection, or one line naming the file, the problem and the fix."""
    path = selection_path(dataset, name)
    if not path.is_file():
        known = ", ".join(selection_names(dataset)) or "none"
        raise SelectionError(
            f"{path}: no selection {name!r} (known: {known}); write one with `labeler curate {dataset}`"
        )
    try:
        return Selection.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as err:
        raise SelectionError(f"{path}: not a selection ({str(err).splitlines()[0]}); curate again") from None


def selection_names(dataset: str | Path) -> list[str]:
    folder = Path(dataset) / SELECTIONS_DIR
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def write_curation(dataset: str | Path, report: CurationReport) -> Path:
    from labeler.io import write_text_atomic

    path = Path(dataset) / CURATION_NAME
    write_text_atomic(path, report.model_dump_json(indent=1))
    return path


def read_curation(dataset: str | Path) -> CurationReport | None:
    path = Path(dataset) / CURATION_NAME
    try:
        return CurationReport.model_validate_json(path.read_text()) if path.is_file() else None
    except ValueError:
        return None
