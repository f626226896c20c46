"""A FoundationStereo release on disk: `model_best_bp2.pth` with `cfg.yaml` beside it (no torch here).

The backend validates the files through this module at construction time, before torch is imported,
so a wrong `--stereo-weights` fails fast with one line naming the file, what was expected and the flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.errors import WeightsError

WEIGHTS_FLAG = "--stereo-weights"
CHECKPOINT_NAME = "model_best_bp2.pth"
CFG_NAME = "cfg.yaml"
_EXPECTED = f"a FoundationStereo release checkpoint ({CHECKPOINT_NAME} with its {CFG_NAME} beside it)"


class CheckpointError(WeightsError):
    """A missing or unusable FoundationStereo checkpoint / cfg.yaml; the message is one line."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{problem}; expected {_EXPECTED}, passed with {WEIGHTS_FLAG}")


@dataclass(frozen=True)
class FoundationStereoArgs:
    """The architecture settings of a release (its cfg.yaml), plus its inference defaults.

    Attributes:
        vit_size: DINOv2 size of the Depth Anything side branch ("vits" | "vitb" | "vitl").
        max_disp: largest disparity of the cost volume, in px at full resolution (multiple of 32).
        hidden_dims: GRU hidden widths at 1/4, 1/8, 1/16 (the release: 128 each).
        n_gru_layers: number of GRU levels (1 to 3).
        n_downsample: log2 of the cost volume's downsampling (the release: 2, i.e. 1/4).
        corr_levels: levels of the cost lookup pyramid.
        corr_radius: lookup radius, in cost-volume px.
        valid_iters: the release's default number of GRU iterations at inference.
        mixed_precision: the release's autocast setting (labeler uses it only on CUDA).
    """

    vit_size: str = "vitl"
    max_disp: int = 416
    hidden_dims: tuple[int, ...] = (128, 128, 128)
    n_gru_layers: int = 3
    n_downsample: int = 2
    corr_levels: int = 2
    corr_radius: int = 4
    valid_iters: int = 32
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.vit_size not in ("vits", "vitb", "vitl"):
            problems.append(f"vit_size {self.vit_size!r} (vits|vitb|vitl)")
        if self.max_disp < 32 or self.max_disp % 32:  # the 3-D hourglass halves max_disp / 4 three times
            problems.append(f"max_disp {self.max_disp} (a positive multiple of 32)")
        if tuple(self.hidden_dims) != (128,) * len(self.hidden_dims) or len(self.hidden_dims) < 3:
            problems.append(f"hidden_dims {list(self.hidden_dims)} (the architecture has [128, 128, 128])")
        if self.n_gru_layers not in (1, 2, 3):
            problems.append(f"n_gru_layers {self.n_gru_layers} (1 to 3)")
        if self.n_downsample != 2:
            problems.append(f"n_downsample {self.n_downsample} (the architecture works at 1/4: 2)")
        if self.corr_levels < 1 or self.corr_radius < 1:
            problems.append(f"corr_levels {self.corr_levels} / corr_radius {self.corr_radius} (>= 1)")
        if problems:
            raise ValueError("unsupported FoundationStereo settings: " + ", ".join(problems))

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> FoundationStereoArgs:
        """Take the architecture keys from a parsed cfg.yaml; other keys (training options) are ignored.

        A cfg without `vit_size` is a ViT-L release, as in the official demo.
        """
        fields = {
            "vit_size": str,
            "max_disp": int,
            "n_gru_layers": int,
            "n_downsample": int,
            "corr_levels": int,
            "corr_radius": int,
            "valid_iters": int,
            "mixed_precision": bool,
        }
        kwargs: dict[str, Any] = {k: conv(cfg[k]) for k, conv in fields.items() if k in cfg}
        if "hidden_dims" in cfg:
            kwargs["hidden_dims"] = tuple(int(v) for v in cfg["hidden_dims"])
        return cls(**kwargs)

    def with_max_disp(self, max_disp: int | None) -> FoundationStereoArgs:
        """A copy with `max_disp` overridden (None keeps the release's)."""
        if max_disp is None or max_disp == self.max_disp:
            return self
        return dataclasses.replace(self, max_disp=max_disp)


@dataclass(frozen=True)
class ReleaseFiles:
    """Paths of one release: the checkpoint and the cfg.yaml beside it."""

    weights: Path
    cfg: Path


def find_release(weights: str | Path | None) -> ReleaseFiles:
    """Check that a checkpoint and its cfg.yaml exist; a folder holding `model_best_bp2.pth` also works.

    Raises:
        CheckpointError: no path given, the checkpoint or cfg.yaml is missing.
    """
    if weights is None:
        raise CheckpointError(None, "the foundation-stereo backend needs a checkpoint and none was given")
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    cfg = path.parent / CFG_NAME
    if not cfg.is_file():
        raise CheckpointError(cfg, f"{CFG_NAME} not found beside the checkpoint {path.name}")
    return ReleaseFiles(weights=path, cfg=cfg)


def read_release_config(cfg_path: str | Path) -> FoundationStereoArgs:
    """Parse a release's cfg.yaml into `FoundationStereoArgs`.

    Raises:
        CheckpointError: unreadable YAML, not a mapping, or settings the architecture does not support.
    """
    import yaml

    path = Path(cfg_path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8 text (a binary file)
        raise CheckpointError(path, f"cannot read {CFG_NAME} ({type(err).__name__})") from None
    if not isinstance(cfg, Mapping):
        raise CheckpointError(path, f"{CFG_NAME} is not a mapping of settings")
    try:
        return FoundationStereoArgs.from_mapping(cfg)
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, str(err).splitlines()[0]) from None
