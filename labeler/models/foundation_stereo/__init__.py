"""FoundationStereo, labeler's own implementation of NVIDIA's release (loads its checkpoints strictly).

Torch-free names (`CheckpointError`, `FoundationStereoArgs`, `find_release`, `read_release_config`) are
imported eagerly; the model and loader are imported on first access, so validating a checkpoint path
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labeler.models.foundation_stereo.release import (
    CheckpointError,
    FoundationStereoArgs,
    ReleaseFiles,
    find_release,
    read_release_config,
)

if TYPE_CHECKING:
    from labeler.models.foundation_stereo.loader import load_foundation_stereo
    from labeler.models.foundation_stereo.model import (
        FoundationStereo,
        Padding,
        StereoEstimate,
        StereoSequence,
    )

__all__ = [
    "CheckpointError",
    "FoundationStereo",
    "FoundationStereoArgs",
    "Padding",
    "ReleaseFiles",
    "StereoEstimate",
    "StereoSequence",
    "find_release",
    "load_foundation_stereo",
    "read_release_config",
]

_LAZY = {
    "FoundationStereo": "model",
    "Padding": "model",
    "StereoEstimate": "model",
    "StereoSequence": "model",
    "load_foundation_stereo": "loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
