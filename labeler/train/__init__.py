"""DINOv2 heads on pseudo-label datasets: depth (DPT, DAv2 layout), instances (objectness + boundary), fusion.

    from labeler.train import train_heads, finetune
    train_heads(TrainHeadsConfig(dataset=..., out=..., model=HeadsModelConfig(backbone="vits"), weights=...))

Heavy modules (torch) load when these functions are first called, not at `import labeler.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labeler.configs import FinetuneConfig, TrainHeadsConfig
    from labeler.train.api import FinetuneResult, TrainResult

__all__ = ["finetune", "train_heads"]


def train_heads(cfg: TrainHeadsConfig, *, stop_after_epoch: int | None = None) -> TrainResult:
    """Train heads on a frozen DINOv2; see `labeler.train.api.train_heads`."""
    from labeler.train.api import train_heads as run

    return run(cfg, stop_after_epoch=stop_after_epoch)


def finetune(cfg: FinetuneConfig, *, stop_after_epoch: int | None = None) -> FinetuneResult:
    """Continue a train-heads run with its last ViT blocks trainable; see `labeler.train.api.finetune`."""
    from labeler.train.api import finetune as run

    return run(cfg, stop_after_epoch=stop_after_epoch)
