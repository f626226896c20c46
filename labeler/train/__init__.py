"""DINOv2 heads on pseudo-label datasets: depth (DPT, DAv2 layout), instances (objectness + boundary), fusion.

    from labeler.train import train_heads, finetune
    train_heads(TrainHeadsConfig(dataset=..., out=..., model=HeadsModelConfig(backbone="vits"), weights=...))

Heavy modules (torch) load when these functions are first called, not at `import labeler.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labeler.train.api import FinetuneResult, TrainResult

__all__ = ["finetune", "train_heads"]


def train_heads(cfg, **kwargs: Any) -> TrainResult:
    from labeler.train.api import train_heads as run

    return run(cfg, **kwargs)


def finetune(cfg, **kwargs: Any) -> FinetuneResult:
    from labeler.train.api import finetune as run

    return run(cfg, **kwargs)
