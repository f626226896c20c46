"""A trainer's run folder as the engine keeps it: config.json and split.json written at the start and
compared on --resume, checkpoints saved and loaded, initial.json read back, and the library versions a
run records."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch

from data_schema.record import Record
from labeler.errors import LabelerError
from labeler.io import atomic_path, write_text_atomic

RESUME_MAY_DIFFER = ("resume", "workers", "gpus")
R = TypeVar("R", bound=Record)


def check_run_dir(run_dir: Path, *, resume: bool) -> None:
    if (run_dir / "checkpoints" / "last.pt").is_file() and not resume:
        raise LabelerError(
            f"{run_dir}: already holds a run; pass --resume to continue it or choose a new --out"
        )


def start_run_folder(
    run_dir: Path,
    record: dict[str, Any],
    train_ids: list[str],
    heldout_ids: list[str],
    *,
    resumed: bool,
    main: bool,
) -> None:
    """Check a resumed run's split, then (main process) write config.json and split.json."""
    if resumed:
        _check_split(run_dir, train_ids, heldout_ids)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.json", json.dumps(record, indent=1))
        write_text_atomic(
            run_dir / "split.json", json.dumps({"train": train_ids, "heldout": heldout_ids}, indent=1)
        )


def check_resume(saved: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    """A resumed run keeps its settings (config.json's config), but for those that may differ."""
    a, b = saved.get("config", {}), now.get("config", {})
    differ = sorted(k for k in set(a) | set(b) if k not in RESUME_MAY_DIFFER and a.get(k) != b.get(k))
    if differ:
        raise LabelerError(
            f"{run_dir}: --resume with different settings ({', '.join(differ)}); use the run's "
            f"settings (config.json) or a new --out"
        )


def _check_split(run_dir: Path, train_ids: list[str], heldout_ids: list[str]) -> None:
    """A resumed run trains and scores the samples it started with: a split that changed since (samples
    added or removed, a review's rejections) would make the resumed run no longer the run it continues."""
    try:
        saved = json.loads((run_dir / "split.json").read_text())
    except (OSError, ValueError):
        return  # a run from before split.json was kept: nothing to compare
    now = {"train": train_ids, "heldout": heldout_ids}
    changed = {k: set(saved.get(k, [])) ^ set(now[k]) for k in now}
    if any(changed.values()):
        n = sum(len(v) for v in changed.values())
        raise LabelerError(
            f"{run_dir}: --resume with another train / held-out split ({n} sample(s) in or out since "
            "the run started: the dataset or its review decisions changed); start a new --out"
        )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A checkpoint this project wrote (format `fmt`); one LabelerError line when it is damaged or other.

    Loaded with `weights_only=True`: the checkpoints hold tensors and plain values only (the engine's
    payload: state dicts, numbers, strings, lists and dicts), so a file that holds any other pickled object
    (which could run code as it is unpickled) is refused, never executed."""
    import pickle

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the class it refused ("unsupported GLOBAL posix.system"); other unpickling errors
        # ("Unsupported operand 0") are a damaged file
        if "GLOBAL" in str(err):
            raise LabelerError(
                f"{path}: holds pickled objects other than tensors and plain values (refused: unpickling "
                "them could run code; a checkpoint of an older labeler may hold them); train again"
            ) from None
        raise LabelerError(
            f"{path}: damaged or not a torch checkpoint ({_first_line(err)}); train again or pass another run"
        ) from None
    except (EOFError, RuntimeError, ValueError, AttributeError, ImportError) as err:
        raise LabelerError(
            f"{path}: damaged or not a torch checkpoint ({_first_line(err)}); train again or pass another run"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise LabelerError(f"{path}: not a labeler {what} checkpoint ({fmt})")
    return ck


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"


def initial_figures(run_dir: Path, figures: type[R]) -> R:
    """The held-out figures before any step (initial.json, written by the engine for tasks that ask), or
    the record's defaults when the run has none."""
    initial = run_dir / "initial.json"
    return figures.model_validate_json(initial.read_text()) if initial.is_file() else figures()


def library_versions(*packages: str) -> dict[str, str]:
    """The versions config.json records: torch, labeler and a trainer's own `packages` (those installed)."""
    out = {"torch": str(torch.__version__)}
    for name in ("labeler", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
