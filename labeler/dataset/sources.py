"""Finding a sample's rectified images again for `labeler repair`, wherever they moved.

A samples-table record names its source files and their sha256. A file is taken from, in order: the
recorded path (a relative one against the dataset, never against the current directory); the same
trailing path under the dataset (`labeler run` keeps its rectified pairs in DATASET/rectified, which moves
with the dataset); the same trailing path under `--sources DIR`. Only a file whose sha256 matches the
record is taken. A sample whose record was lost is found by its id in DATASET/rectified/pairs.json, or in
DIR/pairs.json, or as DIR/left/<id>.png + DIR/right/<id>.png.
"""

from __future__ import annotations

from pathlib import Path

from data_schema.manifest import SampleRecord
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


def find_sources(
    dataset: Path, sample_id: str, rec: SampleRecord | None, sources: Path | None
) -> dict[str, str | None] | None:
    """LabelTask fields (paths, sha256) of the sample's rectified images, or None when not found."""
    roots = [dataset.resolve()] + ([sources.resolve()] if sources is not None else [])
    if rec is not None and rec.source is not None:
        s = rec.source
        left = _find(s.left_path, s.left_sha256, roots)
        right = _find(s.right_path, s.right_sha256, roots)
        if left is None or right is None:
            return None
        return {
            "left_path": left,
            "right_path": right,
            "left_sha256": s.left_sha256,
            "right_sha256": s.right_sha256,
        }
    for folder in [dataset / _RECTIFIED] + ([sources] if sources is not None else []):
        found = _by_id(sample_id, folder)
        if found is not None:
            return found
    return None
