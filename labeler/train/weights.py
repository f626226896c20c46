"""Backbone weights from local files only: official DINOv2, Depth Anything V2, or FoundationStereo.

| checkpoint                      | keys                                   | what loads (strictly)          |
|---------------------------------|----------------------------------------|--------------------------------|
| DINOv2 (`dinov2_vits14_pretrain`) | `cls_token`, `blocks.N.*`, `norm.*`  | the ViT (`pretrained.*`)       |
| Depth Anything V2 (`..._vits.pth`) | `pretrained.*`, `depth_head.*`      | ViT + depth head               |
| FoundationStereo (`model_best_bp2`) | `feature.dino.depth_anything.*`    | ViT + depth head (DAv2 branch) |

Strict means every key of the target and no other, with equal shapes; anything else is one
`WeightsError` line that names `--weights`. Nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from labeler.errors import WeightsError
from labeler.models.checkpoints import SHOWN_KEYS, compare_keys
from labeler.models.dinov2_dpt import VIT_SPECS

WeightsKind = Literal["dinov2", "depth-anything-v2", "foundation-stereo"]
FOUNDATION_STEREO_PREFIX = "feature.dino.depth_anything."
DAV2_PREFIXES = ("pretrained.", "depth_head.")
FLAG = "--weights"


@dataclass(frozen=True)
class LoadedWeights:
    """What was loaded: the file, its kind and how many tensors went into the model."""

    path: str
    kind: WeightsKind
    n_tensors: int


def _fail(path: Path | str, problem: str) -> WeightsError:
    return WeightsError(
        f"{path}: {problem}; pass {FLAG} a DINOv2, Depth Anything V2 or FoundationStereo checkpoint "
        f"(or --random-init for a test run)"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (bare state dict, or under 'model' / 'state_dict')."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise _fail(path, f"not a readable PyTorch checkpoint ({type(err).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise _fail(path, "holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def classify(
    state: Mapping[str, torch.Tensor], path: str | Path
) -> tuple[WeightsKind, dict[str, torch.Tensor]]:
    """The checkpoint's kind and its tensors renamed to the DAv2 layout (`pretrained.*`, `depth_head.*`)."""
    if any(k.startswith(FOUNDATION_STEREO_PREFIX) for k in state):
        n = len(FOUNDATION_STEREO_PREFIX)
        return "foundation-stereo", {
            k[n:]: v for k, v in state.items() if k.startswith(FOUNDATION_STEREO_PREFIX)
        }
    if any(k.startswith(DAV2_PREFIXES) for k in state):
        return "depth-anything-v2", dict(state)
    if "cls_token" in state and any(k.startswith("blocks.") for k in state):
        return "dinov2", {f"pretrained.{k}": v for k, v in state.items()}
    first = ", ".join(list(state)[:SHOWN_KEYS])
    raise _fail(path, f"keys look like none of the three layouts (first keys: {first})")


def _size_hint(state: Mapping[str, torch.Tensor], backbone: str) -> str:
    token = state.get("pretrained.cls_token")
    if token is None:
        return ""
    width = token.shape[-1]
    names = [name for name, spec in VIT_SPECS.items() if spec.embed_dim == width]
    if names and backbone not in names:
        return f" (the checkpoint is {names[0]}, {width}-wide; pass --backbone {names[0]})"
    return ""


def check_keys(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    what: str,
    backbone: str,
) -> None:
    """One-line WeightsError when names or shapes differ."""
    mismatch = compare_keys(expected, state)
    if mismatch:
        raise _fail(
            path,
            f"{what} keys do not match --backbone {backbone}{_size_hint(state, backbone)} "
            f"({mismatch.describe()})",
        )


def load_backbone_weights(model: torch.nn.Module, path: str | Path, *, backbone: str) -> LoadedWeights:
    """Load a checkpoint strictly into `model`'s `pretrained` (DINOv2) or `pretrained` + `depth_head` (DAv2,
    FoundationStereo); the model's other heads keep their initialisation.

    Raises:
        WeightsError: missing/unreadable file, unknown layout, or names/shapes that differ (one line).
    """
    kind, state = classify(read_state_dict(path), path)
    prefixes = ("pretrained.",) if kind == "dinov2" else DAV2_PREFIXES
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    check_keys(expected, state, path, what=kind, backbone=backbone)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # check_keys guarantees it
    return LoadedWeights(path=str(path), kind=kind, n_tensors=len(state))
