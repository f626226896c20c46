"""Outputs never destroy inputs: what an export's `--out` may be.

One rule for every export: `--out` is never the dataset, inside it or around it; a path that exists is
replaced only when it is this export's own earlier output (recognised by its content) and `--overwrite`
is given; anything else that exists is refused in one line, untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from labeler.errors import InputError


def check_export_out(
    out: Path, *, dataset: Path, kind: str, ours: Callable[[Path], bool], overwrite: bool
) -> None:
    """Raise InputError (one line) unless `out` may be written by the `kind` export of `dataset`."""
    src, dst = dataset.resolve(), out.resolve()
    if dst == src or dst.is_relative_to(src) or src.is_relative_to(dst):
        raise InputError(out, f"is, or holds, or lies inside the dataset {dataset}", "pass another --out")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not any(out.iterdir()):
        return  # an empty folder: nothing to lose
    if not ours(out):
        raise InputError(out, f"exists and is not an earlier {kind} export", "pass a new --out")
    if not overwrite:
        raise InputError(out, f"exists (an earlier {kind} export)", "pass --overwrite to replace it")


YTVIS_DESCRIPTION = "labeler video instances"  # how `info.description` of an `export ytvis` file starts


def _json_description(path: Path) -> str | None:
    """`info.description` of a JSON file (None: not a file, not JSON, or no `info` near its start)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            head = f.read(4096)
        text = head.decode("utf-8", errors="replace")
        if '"info"' not in text:
            return None
        info = json.loads(path.read_text()).get("info", {})
    except (OSError, ValueError, AttributeError):
        return None
    return str(info.get("description", "")) if isinstance(info, dict) else None


def coco_json_ours(path: Path) -> bool:
    """A COCO JSON this project wrote: its `info.description` starts with "labeler" (and is no video
    instances file)."""
    text = _json_description(path)
    return text is not None and text.startswith("labeler") and not text.startswith(YTVIS_DESCRIPTION)


def ytvis_json_ours(path: Path) -> bool:
    """A YouTube-VIS JSON this project wrote (`labeler export ytvis`)."""
    text = _json_description(path)
    return text is not None and text.startswith(YTVIS_DESCRIPTION)


def rrd_ours(path: Path) -> bool:
    """A Rerun recording (its file magic)."""
    try:
        with path.open("rb") as f:
            return path.is_file() and f.read(3) == b"RRF"
    except OSError:
        return False


def hf_ours(path: Path) -> bool:
    """A saved `datasets` folder (`datasets.load_from_disk`)."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def webdataset_ours(path: Path) -> bool:
    """A WebDataset export folder: its info.json says `"format": "webdataset"`."""
    try:
        return json.loads((path / "info.json").read_text()).get("format") == "webdataset"
    except (OSError, ValueError, AttributeError):
        return False


def lerobot_ours(path: Path) -> bool:
    """A LeRobot export of this project: meta/info.json beside the meta/labeler.json it writes."""
    return (path / "meta" / "labeler.json").is_file() and (path / "meta" / "info.json").is_file()
