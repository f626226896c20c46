"""Load a FoundationStereo release checkpoint strictly into labeler's implementation."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from labeler.models.checkpoints import compare_keys
from labeler.models.foundation_stereo.model import FoundationStereo
from labeler.models.foundation_stereo.release import (
    CheckpointError,
    FoundationStereoArgs,
    find_release,
    read_release_config,
)


def _state_dict_of(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    """The model state dict inside a release checkpoint (`{'model': ..., ...}`) or a bare state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "holds no state dict (neither {'model': state_dict} nor a state dict)")
    return obj


def check_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, args: FoundationStereoArgs
) -> None:
    """Raise one `CheckpointError` line when names or shapes differ from `model`'s state dict."""
    mismatch = compare_keys(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            path,
            f"keys do not match FoundationStereo vit_size={args.vit_size} of cfg.yaml "
            f"({mismatch.describe()})",
        )


def load_foundation_stereo(
    weights_path: str | Path, *, max_disp: int | None = None, device: str | torch.device = "cpu"
) -> FoundationStereo:
    """Build the model described by the `cfg.yaml` beside `weights_path` and load the checkpoint strictly.

    Args:
        weights_path: a release's `model_best_bp2.pth` (or the folder holding it).
        max_disp: override of cfg.yaml's `max_disp` (px at full resolution, multiple of 32).
        device: where the model goes.

    Returns:
        The model in eval mode, float32, gradients off.

    Raises:
        CheckpointError: missing checkpoint or cfg.yaml, unreadable file, keys or shapes that differ.
    """
    files = find_release(weights_path)
    args = read_release_config(files.cfg).with_max_disp(max_disp)
    model = FoundationStereo(args)
    try:
        raw = torch.load(files.weights, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            files.weights, f"not a readable PyTorch checkpoint ({type(err).__name__})"
        ) from None
    state = _state_dict_of(raw, files.weights)
    check_state_dict(model, state, files.weights, args)
    model.load_state_dict(state, strict=True)
    del raw, state
    model.requires_grad_(False)
    return model.eval().to(device)
