"""Training on pseudo-label datasets, every trainer a task of one engine (labeler/train/engine.py):
DINOv2 heads (depth, instances, fusion: `train_heads`, `finetune`) and FoundationStereo (`train_stereo`).

    from labeler.train import train_heads, finetune, train_stereo
    train_heads(TrainHeadsConfig(dataset=..., out=..., model=HeadsModelConfig(backbone="vits"), weights=...))
    train_stereo(TrainStereoConfig(dataset=..., out=..., stereo_weights=...))

Heavy modules (torch) load when these functions are first called, not at `import labeler.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_schema.commands import FinetuneConfig, TrainHeadsConfig
    from data_schema.stereo_train import TrainStereoConfig
    from labeler.train.heads.api import FinetuneResult, TrainResult
    from labeler.train.stereo.api import StereoTrainResult

__all__ = ["finetune", "train_heads", "train_stereo"]


def train_heads(cfg: TrainHeadsConfig, *, stop_after_epoch: int | None = None) -> TrainResult:
    """Train heads on a frozen DINOv2; see `labeler.train.heads.api.train_heads`."""
    from labeler.train.heads.api import train_heads as run

    return run(cfg, stop_after_epoch=stop_after_epoch)


def finetune(cfg: FinetuneConfig, *, stop_after_epoch: int | None = None) -> FinetuneResult:
    """Continue a train-heads run with its last ViT blocks trainable (`labeler.train.heads.api`)."""
    from labeler.train.heads.api import finetune as run

    return run(cfg, stop_after_epoch=stop_after_epoch)


def train_stereo(cfg: TrainStereoConfig, *, stop_after_epoch: int | None = None) -> StereoTrainResult:
    """Fine-tune FoundationStereo on a rig's dataset; see `labeler.train.stereo.api.train_stereo`."""
    from labeler.train.stereo.api import train_stereo as run

    return run(cfg, stop_after_epoch=stop_after_epoch)
