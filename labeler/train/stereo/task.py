"""FoundationStereo fine-tuning as a task of the engine (labeler/train/engine.py): `labeler train-stereo`.

What trains: the model of `--stereo-weights` (built from its cfg.yaml, loaded strictly), all of it except
the Depth Anything V2 side branch (frozen, as in the original training), the modules of `--freeze`, and
the parameters no forward uses (`stem_4`, `context_zqr_convs`, the context net's `down` / `norm`: DDP
needs every trainable parameter to get a gradient). Batch-norm statistics stay frozen (eval mode) while
everything else trains, as RAFT-style stereo training does with its small batches.

Loss = distill_weight * sequence distillation + photometric_weight * photometric error of the last
iteration + smooth_weight * edge-aware smoothness (labeler/train/stereo/losses.py).

Held-out (every epoch, whole images at `eval_scale`, `valid_iters` iterations, disparity brought back to
full resolution): EPE and bad-2 against the pseudo-labels on confident pixels, the photometric error, and
EPE / bad-2 against truth where `--truth` has it. The best epoch (lowest held-out EPE against the
pseudo-labels; the training loss without held-out samples) is written as `OUT/model_best_bp2.pth` with
`OUT/cfg.yaml`: the release's layout, so `--stereo-weights OUT/model_best_bp2.pth` and the official code
load it strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from data_schema.stereo_train import StereoEpochMetrics, StereoHeldoutFigures, TrainStereoConfig
from labeler.io import atomic_path, write_text_atomic
from labeler.models.foundation_stereo.model import FoundationStereo, Padding, StereoSequence
from labeler.train.engine import autocast
from labeler.train.stereo.data import AugmentSettings, StereoDataset
from labeler.train.stereo.losses import photometric_error, sequence_loss, smoothness_loss
from labeler.train.stereo.truth import TruthSource
from labeler.train.task import TrainTerms

CHECKPOINT_FORMAT = "labeler-stereo/1"
ALWAYS_FROZEN = ("feature.dino",)
UNUSED = ("stem_4", "context_zqr_convs", "cnet.down", "cnet.norm")
FEATURE_PREFIX = "feature."
BAD_PX = 2.0
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_distill",
    "train_photometric",
    "train_smooth",
    "epe_px",
    "bad2_percent",
    "photometric",
    "truth_epe_px",
    "truth_bad2_percent",
    "lr",
    "seconds",
    "train_samples_per_s",
)
STEP_COLUMNS = ("step", "epoch", "loss", "distill", "photometric", "smooth", "lr")
STEREO_PANELS = (
    (("epe_px", "truth_epe_px"), "held-out EPE (px): vs pseudo-labels, vs truth"),
    (("bad2_percent", "truth_bad2_percent"), "held-out bad-2 (%)"),
    (("photometric",), "held-out photometric error"),
)


class SequenceModel(nn.Module):
    """FoundationStereo whose `forward` is the training pass (every iteration), so DDP sees it."""

    def __init__(self, stereo: FoundationStereo, iters: int) -> None:
        super().__init__()
        self.stereo = stereo
        self.iters = iters

    def forward(self, left: Tensor, right: Tensor) -> StereoSequence:
        return self.stereo.estimate_sequence(left, right, iters=self.iters)


def train_with_frozen_batch_norm(model: nn.Module) -> None:
    """Training mode, batch-norm layers excepted: their statistics stay those of the release."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def trainable_modules(model: FoundationStereo, freeze: tuple[str, ...]) -> None:
    """Gradients on, except the DAv2 branch, unused parameters and `freeze` (names of submodules)."""
    model.requires_grad_(True)
    for name in (*ALWAYS_FROZEN, *UNUSED, *freeze):
        model.get_submodule(name).requires_grad_(False)


def freeze_problem(model: FoundationStereo, freeze: tuple[str, ...]) -> str | None:
    """A one-line problem with `--freeze` names (unknown module, nothing left to train), else None."""
    top = sorted(name for name, _ in model.named_children())
    for name in freeze:
        try:
            model.get_submodule(name)
        except AttributeError:
            return f"--freeze {name}: FoundationStereo has no such module (top-level: {', '.join(top)})"
    trainable_modules(model, freeze)
    if not any(p.requires_grad for p in model.parameters()):
        return f"--freeze {','.join(freeze)} leaves nothing to train"
    return None


def release_state(model: FoundationStereo) -> dict[str, Tensor]:
    """The state dict exactly as a release holds it: every key, on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def write_release(
    folder: Path, model: FoundationStereo, cfg: dict[str, Any], *, epoch: int, step: int
) -> Path:
    """`folder/model_best_bp2.pth` ({'model', 'global_step', 'epoch'}, as a release) and `folder/cfg.yaml`."""
    import yaml

    from labeler.models.foundation_stereo.release import CFG_NAME, CHECKPOINT_NAME

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    with atomic_path(path) as tmp:
        torch.save({"model": release_state(model), "global_step": step, "epoch": epoch}, tmp)
    write_text_atomic(folder / CFG_NAME, yaml.safe_dump(cfg, sort_keys=True))
    return path


@dataclass
class _Sums:
    epe: float = 0.0
    bad: int = 0
    n: int = 0

    def add(self, pred: np.ndarray, target: np.ndarray, sel: np.ndarray) -> None:
        err = np.abs(pred[sel].astype(np.float64) - target[sel])
        self.epe += float(err.sum())
        self.bad += int((err > BAD_PX).sum())
        self.n += int(sel.sum())

    def figures(self) -> tuple[float | None, float | None]:
        return (self.epe / self.n, 100.0 * self.bad / self.n) if self.n else (None, None)


@dataclass(frozen=True)
class StereoTask:
    """FoundationStereo on a pseudo-label dataset (see the module docstring). Picklable.

    Args:
        cfg: the command's config.
        weights: the parent's model_best_bp2.pth (cfg.yaml beside it).
        max_disp: the cost volume range in training and held-out passes.
        valid_iters: GRU iterations of the held-out pass.
        release_cfg: the cfg.yaml written beside the fine-tuned checkpoint.
        truth: held-out truth disparities, if any.
    """

    cfg: TrainStereoConfig
    weights: Path
    max_disp: int
    valid_iters: int
    release_cfg: dict[str, Any]
    truth: TruthSource | None = None

    checkpoint_format = CHECKPOINT_FORMAT
    loss_terms = ("distill", "photometric", "smooth")
    record_type = StereoEpochMetrics
    heldout_type = StereoHeldoutFigures
    epoch_columns = EPOCH_COLUMNS
    step_columns = STEP_COLUMNS
    curve_panels = STEREO_PANELS
    evaluate_initial = True

    def datasets(self, train_ids: list[str], heldout_ids: list[str]):
        c = self.cfg
        aug = AugmentSettings(c.augment, c.min_scale, c.max_scale, c.flip_prob, c.jitter)
        train = StereoDataset(c.dataset, train_ids, train=True, crop=c.crop, augment=aug, seed=c.seed)
        held = (
            StereoDataset(
                c.dataset, heldout_ids, train=False, eval_scale=c.eval_scale, truth=self.truth, seed=c.seed
            )
            if heldout_ids
            else None
        )
        return train, held

    def build_model(self) -> SequenceModel:
        from labeler.models.foundation_stereo.loader import load_foundation_stereo

        stereo = load_foundation_stereo(self.weights, max_disp=self.max_disp)
        trainable_modules(stereo, self.cfg.freeze)
        return SequenceModel(stereo, self.cfg.train_iters)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Layer-wise rates: the EdgeNeXt feature network at lr x feature_lr_factor, the rest at lr."""
        named = [(n, p) for n, p in _stereo(model).named_parameters() if p.requires_grad]
        features = [p for n, p in named if n.startswith(FEATURE_PREFIX)]
        rest = [p for n, p in named if not n.startswith(FEATURE_PREFIX)]
        lr = self.cfg.lr
        groups = [
            {"params": rest, "lr": lr, "name": "stereo"},
            {"params": features, "lr": lr * self.cfg.feature_lr_factor, "name": "features"},
        ]
        return [g for g in groups if g["params"]]

    def train_mode(self, model: nn.Module) -> None:
        train_with_frozen_batch_norm(model)

    def prepare(self, batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for k in ("left", "right"):
            out[k] = out[k].float()  # the network takes RGB in [0, 255]
        for k in ("left_clean", "right_clean"):
            if k in out:
                out[k] = out[k].float() / 255
        return out

    def forward(self, net: nn.Module, batch: dict[str, Tensor]) -> StereoSequence:
        return net(batch["left"], batch["right"])

    def loss(self, out: StereoSequence, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        c = self.cfg
        last = out.iterations[-1].float()
        distill = sequence_loss(
            out.initial.float(),
            [d.float() for d in out.iterations],
            batch["disparity"],
            batch["weight"],
            gamma=c.sequence_gamma,
            max_disp=float(self.max_disp),
        )
        err, valid = photometric_error(
            batch["left_clean"],
            batch["right_clean"],
            last,
            ssim_share=c.ssim_share,
            occlusion_px=c.occlusion_px,
        )
        photo = err[valid].mean() if bool(valid.any()) else (err * 0).sum()
        smooth = smoothness_loss(last, batch["left_clean"])
        total = c.distill_weight * distill + c.photometric_weight * photo + c.smooth_weight * smooth
        return {"loss": total, "distill": distill, "photometric": photo, "smooth": smooth}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, *, amp: bool, epoch: int
    ) -> tuple[StereoHeldoutFigures, list[np.ndarray]]:
        """Held-out figures (module docstring) and preview rows of the first `previews` samples."""
        import cv2

        stereo = _stereo(model)
        stereo.eval()
        pseudo, truth = _Sums(), _Sums()
        photo_sum, photo_n = 0.0, 0
        rows: list[np.ndarray] = []
        reader = loader.dataset
        for batch in loader:
            left, right = batch["left"].to(device).float(), batch["right"].to(device).float()
            pad = Padding.to_multiple(*left.shape[-2:])
            with autocast(device, amp):
                est = stereo.estimate(*pad.pad(left, right), iters=self.valid_iters)
            disp = pad.unpad(est.disparity.float())
            err, valid = photometric_error(
                left / 255,
                right / 255,
                disp,
                ssim_share=self.cfg.ssim_share,
                occlusion_px=self.cfg.occlusion_px,
            )
            photo_sum += float(err[valid].sum())
            photo_n += int(valid.sum())
            small = disp[:, 0].cpu().numpy()
            for j in range(small.shape[0]):
                target = batch["disparity_full"][j].numpy()
                conf = batch["confidence_full"][j].numpy()
                gt = batch["truth"][j].numpy()
                h, w = target.shape
                pred = cv2.resize(small[j], (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(
                    w / small.shape[-1]
                )
                with np.errstate(invalid="ignore"):
                    confident = np.isfinite(target) & np.isfinite(conf) & (conf >= self.cfg.confident)
                pseudo.add(pred, target, confident)
                truth.add(pred, gt, np.isfinite(gt))
                if len(rows) < self.cfg.previews:
                    image = np.ascontiguousarray(batch["left"][j].permute(1, 2, 0).numpy())
                    name = f"{reader.sample_ids[int(batch['row'][j])]} (epoch {epoch})"
                    rows.append(preview_row(image, name, target, pred, gt))
        epe, bad = pseudo.figures()
        t_epe, t_bad = truth.figures()
        figures = StereoHeldoutFigures(
            epe_px=epe,
            bad2_percent=bad,
            photometric=photo_sum / photo_n if photo_n else None,
            truth_epe_px=t_epe,
            truth_bad2_percent=t_bad,
        )
        return figures, rows

    def epoch_record(self, train: TrainTerms, heldout: Any) -> StereoEpochMetrics:
        return StereoEpochMetrics(
            epoch=train.epoch,
            train_loss=train.loss,
            lr=train.lr,
            seconds=train.seconds,
            train_samples_per_s=train.samples_per_s,
            train_distill=train.terms.get("distill"),
            train_photometric=train.terms.get("photometric"),
            train_smooth=train.terms.get("smooth"),
            **heldout.model_dump(),
        )

    def score(self, row: Any) -> float:
        """Held-out EPE against the pseudo-labels; the training loss without held-out samples."""
        return float(row.epe_px if row.epe_px is not None else row.train_loss)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"parent": str(self.weights), "release_cfg": self.release_cfg}

    def save_best(self, run_dir: Path, model: nn.Module, payload: dict[str, Any], *, step: int) -> None:
        epoch = int(payload["epoch"])
        write_release(
            run_dir, _stereo(model), {**self.release_cfg, "labeler_epoch": epoch}, epoch=epoch, step=step
        )


def _stereo(model: nn.Module) -> FoundationStereo:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    stereo = inner.stereo if isinstance(inner, SequenceModel) else inner
    assert isinstance(stereo, FoundationStereo)
    return stereo


def preview_row(
    image: np.ndarray, name: str, target: np.ndarray, pred: np.ndarray, truth: np.ndarray
) -> np.ndarray:
    """left (network input scale) | pseudo-label | prediction | |prediction - truth| (or - pseudo-label),
    disparities on one colour scale (1st-99th percentile of the pseudo-label), errors on 0-4 px."""
    import cv2

    from labeler.previews import colourise
    from labeler.train.report import caption

    h, w = target.shape
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    finite = target[np.isfinite(target)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, max(1.0, float(np.nanmax(pred))))
    ref, ref_name = (truth, "truth") if np.isfinite(truth).any() else (target, "pseudo-label")
    err = np.abs(pred - ref)
    tiles = [image, colourise(target, lo, hi), colourise(pred, lo, hi), colourise(err, 0.0, 4.0)]
    names = [name, f"pseudo-label {lo:.0f}-{hi:.0f} px", "fine-tuned", f"|error| vs {ref_name}, 0-4 px"]
    return np.vstack([np.hstack([caption(w, n) for n in names]), np.hstack(tiles)])
