"""Finding a sample's rectified images again for `labeler repair`, wherever they moved.

A samples-table record names its source files and their sha256. A file is taken from, in order: the
recorded path (a relative one against the dataset, never against the current directory); the same
trailing path under the dataset (`labeler run` keeps its rectified pairs in DATASET/rectified, which moves
with the dataset); the same trailing path under `--sources DIR`. Only a file whose sha256 matches the
record is taken. A sample whose record was lost is found by its id in DATASET/rectified/pairs.json, or in
DIR/pairs.json, or as DIR/left/<id>.png + DIR/right/<id>.png, where DIR is `--sources DIR` or a folder the
dataset's other records name as theirs (the folder a run labelled from); such a pair is taken only when
its images are the sample's stored `left` and `right` arrays (when those can be read), so a file that
merely shares the id is never relabelled in its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from data_schema.manifest import SampleRecord, ShardEntry
from labeler.io import sha256_file

_RECTIFIED = "rectified"


def _candidates(recorded: str, roots: list[Path]) -> list[Path]:
    p = Path(recorded)
    out = [p if p.is_absolute() else roots[0] / p]
    parts = p.parts[1:] if p.is_absolute() else p.parts
    for root in roots:
        out += [root.joinpath(*parts[i:]) for i in range(len(parts))]
    return out


def _find(recorded: str, sha256: str, roots: list[Path]) -> str | None:
    for c in _candidates(recorded, roots):
        try:
            if c.is_file() and sha256_file(c) == sha256:
                return str(c.resolve())
        except OSError:
            continue
    return None


def _by_id(sample_id: str, folder: Path) -> dict | None:
    from data_schema.captures import RectifiedSet

    if (folder / "pairs.json").is_file():
        try:
            rect = RectifiedSet.model_validate_json((folder / "pairs.json").read_bytes())
        except (OSError, ValueError):
            return None
        for p in rect.pairs:
            if p.pair_id == sample_id and p.status == "ok" and p.left_path and p.right_path:
                return {
                    "left_path": str(folder / p.left_path),
                    "right_path": str(folder / p.right_path),
                    "left_sha256": p.left_sha256,
                    "right_sha256": p.right_sha256,
                }
        return None
    from labeler.io import safe_name

    name = safe_name(sample_id)
    for ext in (".png", ".jpg", ".jpeg"):
        left, right = folder / "left" / f"{name}{ext}", folder / "right" / f"{name}{ext}"
        if left.is_file() and right.is_file():
            return {"left_path": str(left), "right_path": str(right)}
    return None


def recorded_folders(dataset: Path, entries: Iterable[ShardEntry]) -> list[Path]:
    """The folders of the sources the readable records name: FOLDER/left/<id>.png gives FOLDER (one
    scan of the left_path column; damaged parts are skipped)."""
    from labeler.dataset.tables import table_dataset

    found: set[Path] = set()
    for e in entries:
        try:
            paths = table_dataset(dataset, "samples", [e]).to_table(columns=["left_path"]).column(0)
        except Exception:  # noqa: BLE001 — a damaged part: its folder comes from the others
            continue
        for p in {Path(x) for x in paths.to_pylist() if x}:
            found.add(p.parent.parent if p.is_absolute() else dataset / p.parent.parent)
    return sorted(found)


def _same_as_stored(found: dict, dataset: Path, row: int | None) -> bool:
    """The found images decode to the sample's stored left and right arrays (True when those cannot be
    read: nothing to compare against)."""
    if row is None:
        return True
    from labeler.dataset.shards import digest, open_arrays, read_rows
    from labeler.io import read_rgb

    try:
        stored = read_rows(open_arrays(dataset), row, ("left", "right"))
    except Exception:  # noqa: BLE001 — unreadable arrays: nothing to compare against
        return True
    try:
        return all(digest(read_rgb(found[f"{eye}_path"])) == digest(stored[eye]) for eye in ("left", "right"))
    except Exception:  # noqa: BLE001 — an unreadable image is not the sample's
        return False


def find_sources(
    dataset: Path,
    sample_id: str,
    row: int | None,
    rec: SampleRecord | None,
    sources: Path | None,
    folders: Sequence[Path] = (),
) -> dict[str, str | None] | None:
    """LabelTask fields (paths, sha256) of the sample's rectified images, or None when not found. `row`:
    where its arrays are (a pair found by id must match them); `folders`: `recorded_folders`."""
    roots = [dataset.resolve()] + ([sources.resolve()] if sources is not None else [])
    if rec is not None and rec.source is not None:
        s = rec.source
        left = _find(s.left_path, s.left_sha256, roots)
        right = _find(s.right_path, s.right_sha256, roots)
        if left is not None and right is not None:
            return {
                "left_path": left,
                "right_path": right,
                "left_sha256": s.left_sha256,
                "right_sha256": s.right_sha256,
            }
    for folder in [dataset / _RECTIFIED, *([sources] if sources is not None else []), *folders]:
        found = _by_id(sample_id, folder)
        if found is not None and _same_as_stored(found, dataset, row):
            return found
    return None
