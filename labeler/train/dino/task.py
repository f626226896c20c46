"""DINOv2 continued self-supervised training as a task of the engine (labeler/train/engine.py).

The model (student, EMA teacher, heads, LoRA, export) is labeler/train/dino/model.py; the objective
labeler/train/dino/losses.py; the views labeler/train/dino/data.py.

Two phases, two engine runs: `warmup` trains the projection heads on the frozen parent; `adapt` starts from
its last checkpoint and also trains the last `unfreeze_last` blocks (with the final norm) and/or LoRA
adapters on the other blocks. Loss = dino_weight x DINO + ibot_weight x iBOT + koleo_weight x KoLeo (summed
over the two global crops, as the official loop). Held-out (every epoch): the same objective on one fixed
set of views of the held-out images, teacher at its final temperature, and the spread of the teacher's
class tokens (a collapse detector). `backbone.pth` (the teacher, as DINOv2 releases it, or with
`export="student"` the student after `merge_and_unload`) is rewritten after every adaptation epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_schema.dino_adapt import AdaptBackboneConfig, DinoEpochMetrics, DinoHeldoutFigures
from labeler.models.dinov2_dpt import ViTSpec
from labeler.train.dino.data import CropSettings
from labeler.train.dino.losses import dino_loss, ibot_loss, koleo_loss
from labeler.train.dino.model import (
    DinoSSL,
    Schedules,
    backbone_state,
    parent_vit_state,
    save_backbone,
    vit_of,
)
from labeler.train.task import TrainTerms

CHECKPOINT_FORMAT = "labeler-dino/1"
LOSS_TERMS = ("dino", "ibot", "koleo", "teacher_temp", "momentum")
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_dino",
    "train_ibot",
    "train_koleo",
    "heldout_loss",
    "heldout_dino",
    "heldout_ibot",
    "heldout_koleo",
    "feature_spread",
    "teacher_temp",
    "momentum",
    "lr",
    "seconds",
    "train_samples_per_s",
)
STEP_COLUMNS = ("step", "epoch", "loss", "dino", "ibot", "koleo", "teacher_temp", "momentum", "lr")
PANELS = (
    (("heldout_loss", "heldout_dino", "heldout_ibot"), "held-out objective"),
    (("feature_spread",), "teacher class-token spread (0: collapsed)"),
)


def _inner(model: nn.Module) -> DinoSSL:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    assert isinstance(inner, DinoSSL)
    return inner


@dataclass(frozen=True)
class DinoTask:
    """One phase of adapt-backbone (module docstring). Picklable.

    Args:
        cfg: the command's config.
        phase: "warmup" (heads only) or "adapt".
        spec: the ViT's sizes.
        parent: the parent ViT, a bare official-layout state dict file (checked by the api).
        schedules: teacher temperature and momentum over the whole run.
        files: more training images (--images).
        warm_checkpoint: the warm-up run's last.pt (phase "adapt").
        export_to: where save_best writes backbone.pth (phase "adapt").
    """

    cfg: AdaptBackboneConfig
    phase: str
    spec: ViTSpec
    parent: Path
    schedules: Schedules
    files: tuple[Path, ...] = ()
    warm_checkpoint: Path | None = None
    export_to: Path | None = None

    checkpoint_format = CHECKPOINT_FORMAT
    loss_terms = LOSS_TERMS
    record_type = DinoEpochMetrics
    heldout_type = DinoHeldoutFigures
    epoch_columns = EPOCH_COLUMNS
    step_columns = STEP_COLUMNS
    curve_panels = PANELS
    evaluate_initial = False

    @property
    def crops(self) -> CropSettings:
        c = self.cfg
        return CropSettings(
            c.global_size,
            c.local_size,
            c.local_crops,
            c.global_scale,
            c.local_scale,
            c.mask_probability,
            c.mask_ratio,
        )

    def datasets(self, train_ids: list[str], heldout_ids: list[str]):
        from labeler.train.dino.data import MultiCropImages

        c = self.cfg
        train = MultiCropImages(c.dataset, train_ids, self.files, crops=self.crops, train=True, seed=c.seed)
        held = (
            MultiCropImages(c.dataset, heldout_ids, crops=self.crops, train=False, seed=c.seed)
            if len(heldout_ids) >= 2  # Sinkhorn-Knopp and KoLeo need a batch of two or more
            else None
        )
        return train, held

    def build_model(self) -> DinoSSL:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)  # the heads' init: the same on every rank and every resume
            model = DinoSSL(self.spec, self.cfg, self.schedules)
        parent = parent_vit_state(self.parent, self.cfg.backbone)[1]
        model.student["backbone"].load_state_dict(parent, strict=True)
        model.teacher["backbone"].load_state_dict(parent, strict=True)
        if self.phase == "adapt":
            if self.warm_checkpoint is not None:  # the warmed-up heads (and the step count)
                from labeler.train.run_folder import load_checkpoint

                ck = load_checkpoint(self.warm_checkpoint, CHECKPOINT_FORMAT, "DINO warm-up")
                model.load_state_dict(ck["model"], strict=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed + 1)  # LoRA's A init: seeded too, not the process's RNG state
                model.adapt(self.cfg.unfreeze_last, self.cfg.lora_rank, self.cfg.lora_alpha)
        return model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Heads at lr; the deepest unfrozen block (with the final norm) at backbone_lr, each earlier one
        x layer_decay; LoRA adapters at lora_lr. Biases, norms, LayerScale gammas and the prototypes'
        weight-norm magnitudes get no weight decay (as DINOv2's groups)."""
        m, c = _inner(model), self.cfg
        groups: list[dict[str, Any]] = []

        def add(named: list[tuple[str, nn.Parameter]], lr: float, name: str) -> None:
            decay = [p for n, p in named if p.ndim > 1 and not n.endswith("original0")]
            plain = [p for n, p in named if not (p.ndim > 1 and not n.endswith("original0"))]
            groups.append({"params": decay, "lr": lr, "name": name})
            groups.append({"params": plain, "lr": lr, "name": f"{name}_no_decay", "weight_decay": 0.0})

        add(list(m.student["head"].named_parameters()), c.lr, "heads")
        vit = vit_of(m.student["backbone"])
        depth = 0
        for i in range(len(vit.blocks) - 1, -1, -1):
            named = [
                (n, p) for n, p in vit.blocks[i].named_parameters() if p.requires_grad and ".lora_" not in n
            ]
            if not named:
                continue
            if i == len(vit.blocks) - 1:
                named += [(f"norm.{n}", p) for n, p in vit.norm.named_parameters() if p.requires_grad]
            add(named, c.backbone_lr * c.layer_decay**depth, f"block{i}")
            depth += 1
        lora = [(n, p) for n, p in vit.named_parameters() if ".lora_" in n and p.requires_grad]
        if lora:
            add(lora, c.lora_lr, "lora")
        return [g for g in groups if g["params"]]

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    def prepare(self, batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        """Crop-major batches (all first global crops, then all second ones), normalised on the device."""
        from labeler.train.heads.data import normalise_batch

        def crop_major(x: Tensor) -> Tensor:
            return x.to(device, non_blocking=True).transpose(0, 1).flatten(0, 1)

        return {
            "global": normalise_batch(crop_major(batch["global"])),
            "local": normalise_batch(crop_major(batch["local"])),
            "masks": crop_major(batch["masks"]),
            "row": batch["row"].to(device),
        }

    def forward(self, net: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return net(batch["global"], batch["local"], batch["masks"])

    def loss(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        c = self.cfg
        dino = dino_loss(
            out["student_global"],
            out["student_local"],
            out["teacher_global"],
            n_global=2,
            student_temp=c.student_temp,
        )
        ibot = ibot_loss(
            out["student_masked"], out["teacher_masked"], batch["masks"], student_temp=c.student_temp
        )
        koleo = torch.stack([koleo_loss(x) for x in out["student_cls"].float().chunk(2)]).mean()
        # KoLeo as the official sum over the two global crops' chunks: weight x 2 x their mean
        total = c.dino_weight * dino + c.ibot_weight * ibot + c.koleo_weight * 2 * koleo
        return {
            "loss": total,
            "dino": dino,
            "ibot": ibot,
            "koleo": koleo,
            "teacher_temp": out["teacher_temp"],
            "momentum": out["momentum"],
        }

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[DinoHeldoutFigures, list[np.ndarray]]:
        """The objective on the held-out views, the teacher's class-token spread, and one preview row."""
        from labeler.train.engine import autocast

        m = _inner(model)
        m.eval()
        sums: dict[str, float] = {}
        n_images, cls, rows = 0, [], list[np.ndarray]()
        for batch in loader:
            b = self.prepare(batch, device)
            with autocast(device, amp):
                out = m(b["global"], b["local"], b["masks"])
            terms = self.loss(out, b)
            k = int(batch["row"].shape[0])
            for name in ("loss", "dino", "ibot", "koleo"):
                sums[name] = sums.get(name, 0.0) + float(terms[name]) * k
            n_images += k
            cls.append(F.normalize(out["teacher_cls"][:k].float(), dim=-1).cpu())
            if not rows:
                rows.append(preview_row(batch, out["teacher_patch"][:1].float().cpu(), self.crops, epoch))
        m.train()
        feats = torch.cat(cls)
        spread = float(feats.std(dim=0).mean() * math.sqrt(feats.shape[1])) if feats.shape[0] > 1 else None
        mean = {k: v / max(n_images, 1) for k, v in sums.items()}
        return (
            DinoHeldoutFigures(
                heldout_loss=mean.get("loss"),
                heldout_dino=mean.get("dino"),
                heldout_ibot=mean.get("ibot"),
                heldout_koleo=mean.get("koleo"),
                feature_spread=spread,
            ),
            rows,
        )

    def epoch_record(self, train: TrainTerms, heldout: Any) -> DinoEpochMetrics:
        t = train.terms
        return DinoEpochMetrics(
            epoch=train.epoch,
            train_loss=train.loss,
            train_dino=t.get("dino"),
            train_ibot=t.get("ibot"),
            train_koleo=t.get("koleo"),
            teacher_temp=t.get("teacher_temp"),
            momentum=t.get("momentum"),
            lr=train.lr,
            seconds=train.seconds,
            train_samples_per_s=train.samples_per_s,
            **heldout.model_dump(),
        )

    def score(self, row: Any) -> float:
        """The latest epoch is the one kept: an SSL loss is no measure of the features (the probe is)."""
        return -float(row.epoch)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"phase": self.phase, "parent": str(self.parent), "backbone": self.cfg.backbone}

    def save_best(self, run_dir: Path, model: nn.Module, payload: dict[str, Any], *, step: int) -> None:
        if self.export_to is not None:
            save_backbone(self.export_to, backbone_state(_inner(model), self.cfg.export))


def preview_row(
    batch: dict[str, Tensor], teacher_patch: Tensor, crops: CropSettings, epoch: int
) -> np.ndarray:
    """First held-out image: global crop 1 | crop 2 with its iBOT mask greyed | the teacher's patch features
    of crop 1, first 3 principal components as RGB."""
    import cv2

    from labeler.train.report import caption

    g = batch["global"][0].permute(0, 2, 3, 1).numpy()  # (2, G, G, 3)
    size, grid = crops.global_size, crops.grid
    mask = batch["masks"][0, 1].numpy().reshape(grid, grid)
    big = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    masked = g[1].copy()
    masked[big] = (0.3 * masked[big] + 0.7 * 128).astype(np.uint8)
    x = teacher_patch[0] - teacher_patch[0].mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    pcs = (x @ v[:3].t()).numpy().reshape(grid, grid, -1)
    if pcs.shape[-1] < 3:
        pcs = np.pad(pcs, ((0, 0), (0, 0), (0, 3 - pcs.shape[-1])))
    lo, hi = pcs.min(axis=(0, 1)), pcs.max(axis=(0, 1))
    pca = ((pcs - lo) / np.maximum(hi - lo, 1e-9) * 255).astype(np.uint8)
    pca = cv2.resize(pca, (size, size), interpolation=cv2.INTER_NEAREST)
    tiles = [np.ascontiguousarray(g[0]), masked, pca]
    names = [f"crop 1, ep {epoch}", "crop 2 + mask", "teacher PCA"]  # fits a 112 px tile
    return np.vstack([np.hstack([caption(size, n) for n in names]), np.hstack(tiles)])
