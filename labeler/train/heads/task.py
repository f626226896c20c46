"""The heads trainer as a task of the engine (labeler/train/engine.py): `train-heads` and `finetune`.

Data: `HeadsDataset` items (image, stereo depth + confidence weight, objectness / edge targets, ids);
loss: `joint_loss` (depth and / or seg terms); held-out: AbsRel, δ1 against the stereo depth, fg IoU,
mIoU, AP50 against the pseudo-masks (`HeldoutFigures`); one `EpochMetrics` per epoch.

Checkpoints (`RUN/checkpoints/last.pt`, `best.pt`, format `labeler-heads/1`) hold `model_config`
(HeadsModelConfig) and `instances` (InstanceParams) beside the weights, so predict and finetune rebuild
the model without the command line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_schema.heads import EpochMetrics, HeadsModelConfig, HeldoutFigures, InstanceParams
from labeler.train.engine import autocast
from labeler.train.heads.losses import LossWeights, joint_loss
from labeler.train.heads.model import HeadsModel
from labeler.train.report import EPOCH_COLUMNS, STEP_COLUMNS
from labeler.train.run_folder import load_checkpoint as load_engine_checkpoint
from labeler.train.run_folder import save_checkpoint
from labeler.train.task import TrainTerms

CHECKPOINT_FORMAT = "labeler-heads/1"
HEADS_PANELS = (
    (("abs_rel", "delta1"), "held-out depth vs stereo"),
    (("fg_iou", "mask_miou", "mask_ap50"), "held-out masks vs pseudo-masks"),
)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A heads checkpoint (best.pt / last.pt) as its plain dict; one line when it is not one."""
    return load_engine_checkpoint(path, CHECKPOINT_FORMAT, "heads")


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) uint8 RGB array."""
    return np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy())


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`, images normalised there (they travel as uint8)."""
    from labeler.train.heads.data import normalise_batch

    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    out["image"] = normalise_batch(out["image"])
    return out


@dataclass(frozen=True)
class HeadsTask:
    """DINOv2 heads on a pseudo-label dataset. `make_model` / `make_groups` are picklable (module-level
    partials), so the task travels to spawned GPU processes."""

    dataset: Path
    model_config: HeadsModelConfig
    make_model: Callable[[], HeadsModel]
    make_groups: Callable[[HeadsModel], list[dict[str, Any]]]
    loss_weights: LossWeights
    instances: InstanceParams
    augment: bool
    previews: int
    seed: int
    include_rejected: bool = False  # keep the objects a review rejected (the samples are the api's split)
    evaluate_initial: bool = False  # finetune: the frozen model on a held-out set its run did not score

    checkpoint_format = CHECKPOINT_FORMAT
    loss_terms = ("depth", "seg")
    record_type = EpochMetrics
    heldout_type = HeldoutFigures
    epoch_columns = EPOCH_COLUMNS
    step_columns = STEP_COLUMNS
    curve_panels = HEADS_PANELS

    def datasets(self, train_ids: list[str], heldout_ids: list[str]):
        from labeler.train.heads.data import HeadsDataset

        mc = self.model_config
        train = HeadsDataset(
            self.dataset,
            train_ids,
            input_size=mc.input_size,
            train=True,
            augment=self.augment,
            max_depth_m=mc.max_depth_m,
            seed=self.seed,
            include_rejected=self.include_rejected,
            classes=mc.classes if mc.task != "depth" else None,
        )
        held = (
            HeadsDataset(
                self.dataset,
                heldout_ids,
                input_size=mc.input_size,
                train=False,
                max_depth_m=mc.max_depth_m,
                seed=self.seed,
                include_rejected=self.include_rejected,
                classes=mc.classes if mc.task != "depth" else None,
            )
            if heldout_ids
            else None
        )
        return train, held

    def build_model(self) -> HeadsModel:
        return self.make_model()

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        assert isinstance(model, HeadsModel)
        return self.make_groups(model)

    def train_mode(self, model: torch.nn.Module) -> None:
        model.train()

    def prepare(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        return _to(batch, device)

    def forward(self, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return net(batch["image"])

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return joint_loss(out, batch, self.loss_weights)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[HeldoutFigures, list[np.ndarray]]:
        """Held-out loss and metrics (AbsRel, δ1 vs stereo depth; fg IoU, mIoU, AP50 vs pseudo-masks) at
        the model's input resolution, plus preview rows for the first `previews` samples."""
        from labeler.train.heads.instances import instances_from_maps, object_table, sigmoid
        from labeler.train.heads.metrics import HeldoutMetrics
        from labeler.train.report import preview_row

        model.eval()
        acc, losses, rows = HeldoutMetrics(), list[float](), list[np.ndarray]()
        reader = loader.dataset
        for batch in loader:
            b = _to(batch, device)
            with autocast(device, amp):
                out = model(b["image"])
            losses.append(float(joint_loss(out, b, self.loss_weights)["loss"]))
            out = {k: v.float().cpu().numpy() for k, v in out.items()}
            for j in range(batch["image"].shape[0]):
                valid = batch["weight"][j].numpy() > 0
                target = np.where(valid, batch["depth"][j].numpy(), np.nan)
                depth = out["depth"][j] if "depth" in out else None
                if depth is not None:
                    acc.add_depth(depth, target)
                ids = scores = None
                if "objectness" in out:
                    ids, scores = instances_from_maps(
                        sigmoid(out["objectness"][j]), sigmoid(out["boundary"][j]), depth, self.instances
                    )
                    acc.add_instances(ids, scores, batch["ids"][j].numpy())
                if len(rows) < self.previews:
                    row = int(batch["row"][j])
                    image = to_hwc(batch["image"][j])
                    tids = batch["ids"][j].numpy().astype(np.uint16)
                    rows.append(
                        preview_row(
                            image,
                            sample_id=f"{reader.sample_ids[row]} (epoch {epoch})",
                            target_depth=target,
                            pred_depth=depth,
                            target_ids=tids,
                            target_objects=object_table(tids, np.ones(int(tids.max())), target),
                            pred_ids=ids,
                            pred_objects=object_table(ids, scores, depth)
                            if ids is not None and scores is not None
                            else None,
                        )
                    )
        model.train()
        return acc.summary(heldout_loss=float(np.mean(losses)) if losses else float("nan")), rows

    def epoch_record(self, train: TrainTerms, heldout: Any) -> EpochMetrics:
        return EpochMetrics(
            epoch=train.epoch,
            train_loss=train.loss,
            lr=train.lr,
            seconds=train.seconds,
            train_samples_per_s=train.samples_per_s,
            train_depth=train.terms.get("depth"),
            train_seg=train.terms.get("seg"),
            **heldout.model_dump(),
        )

    def score(self, row: Any) -> float:
        """The held-out loss; the training loss of a run without held-out samples."""
        return float(row.heldout_loss if row.heldout_loss is not None else row.train_loss)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "model_config": self.model_config.model_dump(mode="json"),
            "instances": self.instances.model_dump(mode="json"),
        }

    def save_best(self, run_dir: Path, model: torch.nn.Module, payload: dict[str, Any], *, step: int) -> None:
        save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
