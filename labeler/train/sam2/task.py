"""SAM2 retraining as a task of the engine (labeler/train/engine.py): `labeler train-sam2`.

What trains: the prompt encoder and the mask decoder of the `--sam2-checkpoint` model (built from
`--sam2-config`, loaded strictly); with `--train-encoder` also the image encoder, at `lr x
encoder_lr_factor`, block i of n at a further `layer_decay^(n - i)` (the patch and position embeddings one
step lower, the neck not decayed), as the official training's layer-wise decay. The memory modules and the
object-pointer projection are never reached by image training and stay as they were.

A step (labeler/train/sam2/net.py): up to `objects_per_image` target masks of each image, a box or a click
each, then `corrections` corrective clicks from the errors of the previous prediction
(labeler/train/sam2/prompts.py); loss: focal x20 + dice x1 + IoU-prediction L1 x1 + object score x1 over
every step, the mask terms on the best of the candidates where there are three
(labeler/train/sam2/losses.py). Held-out every epoch (labeler/train/sam2/eval.py): point and box mIoU and
the automatic generator's matched-mask recall.

The best epoch (highest mean of the held-out point and box mIoU; the lowest training loss without held-out
images) is written as `OUT/sam2.pt`, `{"model": state_dict}` of the whole `SAM2Base` as a release holds
it, so `build_sam2(config, OUT/sam2.pt)` and `--masks sam2 --sam2-checkpoint OUT/sam2.pt` load it strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from data_schema.sam2_train import Sam2EpochMetrics, Sam2HeldoutFigures, TrainSam2Config
from labeler.io import atomic_path
from labeler.train.sam2.data import Sam2Dataset
from labeler.train.sam2.losses import TERMS, LossWeights, multistep_loss
from labeler.train.sam2.net import PromptedSam2, PromptSettings, StepOutputs, set_trainable
from labeler.train.task import TrainTerms

CHECKPOINT_FORMAT = "labeler-sam2/1"
CHECKPOINT_NAME = "sam2.pt"
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_focal",
    "train_dice",
    "train_iou",
    "train_object_score",
    "point_miou",
    "box_miou",
    "amg_recall",
    "amg_masks_per_image",
    "lr",
    "seconds",
    "train_samples_per_s",
)
STEP_COLUMNS = ("step", "epoch", "loss", *TERMS, "lr")
SAM2_PANELS = (
    (("point_miou", "box_miou"), "held-out mIoU: one centre click, exact box"),
    (("amg_recall",), "held-out automatic masks: recall at IoU >= 0.5"),
)


def encoder_layer(name: str, n_blocks: int) -> int:
    """Layer index of an image-encoder parameter for layer-wise decay: embeddings 0, trunk block i -> i + 1,
    the neck n + 1."""
    if name.startswith("trunk.blocks."):
        return int(name.split(".")[2]) + 1
    if name.startswith("trunk."):
        return 0
    return n_blocks + 1


def release_state(sam: nn.Module) -> dict[str, Tensor]:
    """Every key of the model's state dict, on the CPU, contiguous: the layout of a release checkpoint."""
    return {k: v.detach().cpu().contiguous() for k, v in sam.state_dict().items()}


def write_checkpoint(path: Path, sam: nn.Module) -> Path:
    """`{"model": state_dict}` at `path`, as SAM2 releases are (build_sam2 reads only "model")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"model": release_state(sam)}, tmp)
    return path


def _inner(model: nn.Module) -> PromptedSam2:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    assert isinstance(inner, PromptedSam2)
    return inner


@dataclass(frozen=True)
class Sam2Task:
    """SAM2 on a dataset's masks (see the module docstring). Picklable.

    Args:
        cfg: the command's config.
        config_path: the resolved `--sam2-config` YAML.
        targets: target object ids per sample id (both splits).
        image_size: the model's square input side, px.
    """

    cfg: TrainSam2Config
    config_path: Path
    targets: dict[str, list[int]]
    image_size: int

    checkpoint_format = CHECKPOINT_FORMAT
    loss_terms = TERMS
    record_type = Sam2EpochMetrics
    heldout_type = Sam2HeldoutFigures
    epoch_columns = EPOCH_COLUMNS
    step_columns = STEP_COLUMNS
    curve_panels = SAM2_PANELS
    evaluate_initial = True

    @property
    def weights(self) -> LossWeights:
        c = self.cfg
        return LossWeights(c.focal_weight, c.dice_weight, c.iou_weight, c.object_score_weight)

    def datasets(self, train_ids: list[str], heldout_ids: list[str]):
        c = self.cfg
        common = {"image_size": self.image_size, "seed": c.seed}
        train = Sam2Dataset(
            c.dataset, train_ids, self.targets, n_objects=c.objects_per_image, train=True, **common
        )
        held = Sam2Dataset(
            c.dataset, heldout_ids, self.targets, n_objects=c.heldout_objects, train=False, **common
        )
        return train, held if len(held) else None

    def build_model(self) -> PromptedSam2:
        from labeler.segment.sam2_model import load_sam2

        c = self.cfg
        sam = load_sam2(str(self.config_path), c.sam2_checkpoint)
        set_trainable(
            sam,
            train_encoder=c.train_encoder,
            corrections=c.corrections,
            object_score_weight=c.object_score_weight,
        )
        prompts = PromptSettings(c.box_prob, c.corrections, c.gt_click_prob)
        return PromptedSam2(sam, prompts, train_encoder=c.train_encoder, cache=c.cache_embeddings)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Prompt encoder + mask decoder at lr; with the encoder, one group per layer (module docstring)."""
        c, sam = self.cfg, _inner(model).sam
        heads = [
            p
            for m in (sam.sam_prompt_encoder, sam.sam_mask_decoder)
            for p in m.parameters()
            if p.requires_grad
        ]
        groups: list[dict[str, Any]] = [{"params": heads, "lr": c.lr, "name": "decoder"}]
        if c.train_encoder:
            n = len(sam.image_encoder.trunk.blocks)
            by_layer: dict[int, list[nn.Parameter]] = {}
            for name, p in sam.image_encoder.named_parameters():
                if p.requires_grad:
                    by_layer.setdefault(encoder_layer(name, n), []).append(p)
            by_layer.setdefault(n + 1, []).append(sam.no_mem_embed)  # the image path's last step
            for layer in sorted(by_layer):
                lr = c.lr * c.encoder_lr_factor * c.layer_decay ** (n + 1 - layer)
                groups.append({"params": by_layer[layer], "lr": lr, "name": f"encoder.{layer:02d}"})
        return groups

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if not self.cfg.train_encoder:  # frozen: as it runs at inference (and so the cache stays valid)
            _inner(model).sam.image_encoder.eval()

    def prepare(self, batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def forward(self, net: nn.Module, batch: dict[str, Tensor]) -> StepOutputs:
        return net(batch["image"], batch["masks"], batch["valid"], batch["row"], batch["seed"])

    def loss(self, out: StepOutputs, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if not out.steps:  # every object of the batch vanished at the input size
            return {"loss": out.zero, **{k: out.zero.detach() for k in TERMS}}
        return multistep_loss(out.steps, out.target, self.weights)

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[Sam2HeldoutFigures, list[np.ndarray]]:
        from labeler.train.sam2.eval import evaluate_sam2

        c = self.cfg
        amg = (
            {
                "points_per_side": c.amg_points_per_side,
                "pred_iou_thresh": c.amg_pred_iou_thresh,
                "stability_thresh": c.amg_stability_thresh,
            }
            if c.amg_points_per_side > 0
            else None
        )
        return evaluate_sam2(
            _inner(model), loader, device, amp=amp, epoch=epoch, amg=amg, previews=c.previews
        )

    def epoch_record(self, train: TrainTerms, heldout: Any) -> Sam2EpochMetrics:
        return Sam2EpochMetrics(
            epoch=train.epoch,
            train_loss=train.loss,
            lr=train.lr,
            seconds=train.seconds,
            train_samples_per_s=train.samples_per_s,
            train_focal=train.terms.get("focal"),
            train_dice=train.terms.get("dice"),
            train_iou=train.terms.get("iou"),
            train_object_score=train.terms.get("object_score"),
            **heldout.model_dump(),
        )

    def score(self, row: Any) -> float:
        """Minus the mean held-out mIoU (point and box); the training loss without held-out images."""
        mious = [v for v in (row.point_miou, row.box_miou) if v is not None]
        return -float(np.mean(mious)) if mious else float(row.train_loss)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"sam2_config": str(self.config_path), "parent": str(self.cfg.sam2_checkpoint)}

    def save_best(self, run_dir: Path, model: nn.Module, payload: dict[str, Any], *, step: int) -> None:
        write_checkpoint(run_dir / CHECKPOINT_NAME, _inner(model).sam)
