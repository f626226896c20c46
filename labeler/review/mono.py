"""Monocular depth for the stereo-monocular doubt signal, from weights the user already has.

- `DepthAnythingMono`: the frozen Depth Anything V2 branch inside a FoundationStereo release checkpoint
  (`feature.dino.depth_anything.*`): only those tensors are read, strictly, into labeler's DAv2 model.
  Its output is relative inverse depth (affine-invariant), `kind = "inverse"`.
- `HeadsMono`: the depth head of a `labeler train-heads` / `finetune` run, metric depth, `kind = "metric"`.

Both take (H, W, 3) uint8 RGB images and return (H, W) float32 maps at the input size. The model is
built on first use on the given device; batches of equal-size images share one forward pass.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from labeler.errors import LabelerError

DAV2_SHORT_SIDE = 518  # Depth Anything V2's inference size (its `input_size`)
_DINO_PREFIX = "feature.dino.depth_anything."


class MonoModel(Protocol):
    name: str  # recorded in DATASET/doubt.json
    kind: Literal["inverse", "metric"]

    def predict_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def _dav2_size(h: int, w: int, short: int = DAV2_SHORT_SIDE) -> tuple[int, int]:
    """(H, W) with the short side at `short`, both sides multiples of 14 (DAv2 keeps the aspect ratio)."""
    scale = short / min(h, w)
    return max(14, round(h * scale / 14) * 14), max(14, round(w * scale / 14) * 14)


class DepthAnythingMono:
    """The Depth Anything V2 branch of a FoundationStereo checkpoint (no extra weights).

    Args:
        weights: the release's model_best_bp2.pth (cfg.yaml beside it names the ViT size).
        device: "cpu" or a CUDA device.
    """

    kind: Literal["inverse", "metric"] = "inverse"

    def __init__(self, weights: str | Path, *, device: str = "cpu") -> None:
        from labeler.models.foundation_stereo.release import find_release, read_release_config

        self.release = find_release(weights)  # one line for a missing file or cfg.yaml, before any sample
        self.vit = read_release_config(self.release.cfg).vit_size
        self.device = device
        self.name = f"foundation-stereo:{self.release.weights}"
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch

            from labeler.models.checkpoints import compare_keys
            from labeler.models.dinov2_dpt import DinoDPT
            from labeler.models.foundation_stereo.release import CheckpointError

            path = self.release.weights
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
                raise CheckpointError(
                    path, f"not a readable PyTorch checkpoint ({type(err).__name__})"
                ) from None
            state = raw.get("model", raw) if isinstance(raw, dict) else {}
            dino = {k[len(_DINO_PREFIX) :]: v for k, v in state.items() if k.startswith(_DINO_PREFIX)}
            model = DinoDPT(self.vit)  # type: ignore[arg-type]  # vit_size is checked by read_release_config
            mismatch = compare_keys(model.state_dict(), dino)
            if mismatch:
                raise CheckpointError(
                    path, f"no Depth Anything V2 branch of vit_size={self.vit} ({mismatch.describe()})"
                )
            from labeler.models.checkpoints import non_finite_tensors

            bad = non_finite_tensors(dino)
            if bad:
                raise CheckpointError(path, f"{len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]})")
            model.load_state_dict(dino, strict=True)
            self._model = model.requires_grad_(False).eval().to(self.device)
        return self._model

    def predict_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2
        import torch
        import torch.nn.functional as F

        from labeler.models.dinov2_dpt import IMAGENET_MEAN, IMAGENET_STD

        if not images:
            return []
        h, w = images[0].shape[:2]
        if any(im.shape != images[0].shape for im in images):
            return [r for im in images for r in self.predict_many([im])]
        rh, rw = _dav2_size(h, w)
        x = np.stack([cv2.resize(im, (rw, rh), interpolation=cv2.INTER_CUBIC) for im in images])
        t = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2).float() / 255
        mean = torch.tensor(IMAGENET_MEAN, device=t.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=t.device)[:, None, None]
        with torch.inference_mode():
            out = self.model((t - mean) / std)
            out = F.interpolate(out[:, None], size=(h, w), mode="bilinear", align_corners=True)[:, 0]
        return [a.astype(np.float32) for a in out.float().cpu().numpy()]


class HeadsMono:
    """The depth head of a trained heads run (metric depth)."""

    kind: Literal["inverse", "metric"] = "metric"

    def __init__(self, run: str | Path, *, device: str = "cpu") -> None:
        from labeler.train.heads.predictor import HeadsPredictor

        self.predictor = HeadsPredictor.from_run(run, device=device)
        if self.predictor.model_config.task == "seg":
            raise LabelerError(
                f"{run}: a segmentation-only run has no depth head; pass a depth or fusion run"
            )
        self.name = f"heads:{run}"

    def predict_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for im in images:
            depth = self.predictor.predict(im).depth_m
            assert depth is not None  # a depth or fusion run (checked above)
            out.append(depth.astype(np.float32))
        return out


def mono_model(
    *, stereo_weights: Path | None, heads: Path | None, device: str = "cpu"
) -> DepthAnythingMono | HeadsMono | None:
    """The model the flags name (at most one), or None."""
    if stereo_weights is not None and heads is not None:
        raise LabelerError("--stereo-weights and --heads: choose one monocular model")
    if stereo_weights is not None:
        return DepthAnythingMono(stereo_weights, device=device)
    if heads is not None:
        return HeadsMono(heads, device=device)
    return None
