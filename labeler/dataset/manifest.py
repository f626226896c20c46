"""`manifest.json` (what a dataset is and how it was made: data_schema/manifest.py) and the dataset lock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from data_schema.manifest import Manifest
from labeler.errors import InputError
from labeler.io import folder_lock

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"


def manifest_path(dataset: str | Path) -> Path:
    return Path(dataset) / MANIFEST_NAME


def has_manifest(dataset: str | Path) -> bool:
    return manifest_path(dataset).is_file()


def write_manifest(dataset: str | Path, manifest: Manifest) -> Manifest:
    """Write the manifest with its own hash (labeler/dataset/seal.py); returns it as written."""
    from labeler.dataset.seal import sealed
    from labeler.io import write_text_atomic

    manifest = sealed(manifest)
    write_text_atomic(manifest_path(dataset), manifest.model_dump_json(indent=1))
    return manifest


def seal_problems(dataset: str | Path, manifest: Manifest, *, cut_tail: bool = False) -> list[str]:
    """The chain's root: the manifest's own hash and every root file it sealed (one line each).
    `cut_tail`: also name an index file's last line cut short (validate does; a resumed run and the
    reader take it for a kill during an append and drop it)."""
    from labeler.dataset.seal import record_intact, root_problems

    problems = []
    if not record_intact(manifest):
        problems.append(f"{manifest_path(dataset)}: edited after it was written (record_sha256 differs)")
    return problems + root_problems(dataset, manifest.files, cut_tail=cut_tail)


def check_sealed(dataset: str | Path, *, doing: str) -> None:
    """Before a writer touches a dataset: a broken seal is one line naming `labeler repair` (a writer
    that went on would build on a damaged index and could drop what it lost track of)."""
    if not has_manifest(dataset) or (manifest_schema_version(dataset) or 0) < 2:  # v1: migrate first
        return
    try:
        manifest = load_manifest(dataset)
    except InputError:
        return  # an unreadable manifest: the run rebuilds it from the shard index
    problems = seal_problems(dataset, manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(
            dataset,
            f"damaged, so {doing} would build on it: {problems[0]}{more}",
            f"see `labeler validate {dataset}`, then run `labeler repair {dataset}`",
        )


def manifest_schema_version(dataset: str | Path) -> int | None:
    """The manifest's schema_version without validating the rest (None: no readable manifest)."""
    try:
        return int(json.loads(manifest_path(dataset).read_text()).get("schema_version"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load_manifest(dataset: str | Path) -> Manifest:
    """The v2 dataset record; a v1 dataset is one line naming `labeler migrate`."""
    path = manifest_path(dataset)
    if not path.is_file():
        raise InputError(
            path,
            "no manifest: not a labeler dataset (or its first run never started)",
            "run `labeler pseudo-label` or `labeler run` with --out pointing here",
        )
    if manifest_schema_version(dataset) == 1:
        raise InputError(
            path, "a v1 dataset (one manifest with every sample)", f"convert it: labeler migrate {dataset}"
        )
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValueError as err:
        raise InputError(
            path,
            f"not a valid manifest ({' '.join(str(err).split())[:200]})",
            "re-run the labelling command with this --out: it rebuilds the manifest from the shard index",
        ) from None


@contextmanager
def dataset_lock(dataset: str | Path) -> Iterator[None]:
    """Exclusive lock for a dataset's writer; the OS drops it when the process dies (no stale lock)."""
    with folder_lock(dataset, LOCK_NAME, what="this dataset"):
        yield


LIBRARIES = (
    "labeler",
    "numpy",
    "opencv-contrib-python-headless",
    "zarr",
    "pyarrow",
    "dask",
    "distributed",
    "torch",
    "scikit-image",
    "sam2",
    "timm",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the labels, as recorded in the manifest."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
