"""Strict checkpoint loading: does a state dict have exactly the model's names and shapes?

Every loader of the project (FoundationStereo releases, DINOv2 / Depth Anything V2 backbones, SAM2)
compares names and shapes with `compare_keys` before `load_state_dict`, so that a wrong file fails
with one line naming the file, what is missing / unexpected / of another shape, and the flag to fix,
instead of PyTorch's multi-line report. The caller words the line; `KeyMismatch.describe` gives the
part that lists the keys. Importing this module does not import torch (it only reads `.shape`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SHOWN_KEYS = 3  # key names quoted per kind of mismatch; more are counted


@dataclass(frozen=True)
class KeyMismatch:
    """How a checkpoint's state dict differs from a model's, keys in the model's (then the file's) order.

    Attributes:
        missing: names the model has and the checkpoint lacks.
        unexpected: names the checkpoint has and the model lacks.
        reshaped: (name, shape in the checkpoint, shape in the model) for names in both.
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    reshaped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.reshaped)

    def describe(self, *, shown: int = SHOWN_KEYS) -> str:
        """One line, e.g. `2 missing: a, b; 1 wrong shape (checkpoint vs model): c [2] vs [1]`."""
        reshaped = [f"{k} {list(got)} vs {list(want)}" for k, got, want in self.reshaped]
        parts = []
        for label, items in (
            ("missing", list(self.missing)),
            ("unexpected", list(self.unexpected)),
            ("wrong shape (checkpoint vs model)", reshaped),
        ):
            if items:
                more = f", +{len(items) - shown} more" if len(items) > shown else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:shown])}{more}")
        return "; ".join(parts)


def compare_keys(expected: Mapping[str, Any], state: Mapping[str, Any]) -> KeyMismatch:
    """Compare a checkpoint's tensors with the model's by name and shape (values and dtypes are not read).

    Args:
        expected: the model's state dict (or the part of it the checkpoint must fill).
        state: the checkpoint's tensors, already renamed to the model's names.

    Returns:
        The differences; falsy when the names are equal and every shape matches.
    """
    return KeyMismatch(
        missing=tuple(k for k in expected if k not in state),
        unexpected=tuple(k for k in state if k not in expected),
        reshaped=tuple(
            (k, tuple(state[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ),
    )


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors holding NaN or inf anywhere in `state` (nested dicts / lists of
    tensors, as a checkpoint holds them). Weights like that load without complaint and then turn every
    output into NaN: the loaders refuse them before the first sample."""
    import torch

    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return [prefix or "tensor"] if bad else []
    if isinstance(state, Mapping):
        items: Any = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return []
    found: list[str] = []
    for k, v in items:
        found += non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    return found


def non_finite_problem(path: Any) -> str | None:
    """`N tensors hold NaN or inf (first: name)` for a checkpoint file, read memory-mapped; None when every
    tensor is finite or the file does not read (its loader then says why)."""
    import pickle

    import torch

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError):
        return None
    bad = non_finite_tensors(raw)
    if not bad:
        return None
    more = f", +{len(bad) - 1} more" if len(bad) > 1 else ""
    return f"{len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}{more}); the file is damaged"
