"""A trained heads run as a predictor: images in, metric depth and named objects out. `labeler predict` and
the review's monocular model both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schema.heads import HeadsModelConfig, InstanceParams
from labeler.errors import LabelerError


@dataclass(frozen=True)
class Prediction:
    """numpy results of one image at its own resolution."""

    depth_m: np.ndarray | None  # (H, W) float32 metres
    ids: np.ndarray  # (H, W) uint16, 0 = none
    scores: np.ndarray  # (K,) float32
    class_names: tuple[str, ...] | None = None  # (K,) each id's class, from a model trained with classes


class HeadsPredictor:
    """A trained heads model from a run folder, numpy in / numpy out."""

    def __init__(
        self,
        model,
        *,
        model_config: HeadsModelConfig,
        instances: InstanceParams,
        device: str = "cpu",
        epoch: int = 0,
        weights: str | None = None,
        run: str = "",
    ) -> None:
        self.model, self.model_config, self.instances = model, model_config, instances
        self.device, self.epoch, self.weights, self.run = device, epoch, weights, run

    @classmethod
    def from_run(
        cls,
        run: str | Path,
        *,
        checkpoint: str = "best",
        device: str = "cpu",
        instances: InstanceParams | None = None,
    ) -> HeadsPredictor:
        from labeler.train.heads.model import build_model
        from labeler.train.heads.task import load_checkpoint

        path = Path(run) / "checkpoints" / f"{checkpoint}.pt"
        if not path.is_file():
            raise LabelerError(
                f"{run}: no checkpoints/{checkpoint}.pt; pass --run a train-heads or finetune run folder"
            )
        from labeler.models.checkpoints import non_finite_tensors

        ck = load_checkpoint(path)
        bad = non_finite_tensors(ck["model"])
        if bad:
            raise LabelerError(
                f"{path}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); the run diverged or "
                "the file is damaged: pass --checkpoint last, or train again"
            )
        mc = HeadsModelConfig.model_validate(ck["model_config"])
        model = build_model(mc)
        model.load_state_dict(ck["model"], strict=True)
        model.requires_grad_(False)
        return cls(
            model.eval().to(device),
            model_config=mc,
            device=device,
            epoch=int(ck["epoch"]),
            instances=instances or InstanceParams.model_validate(ck["instances"]),
            weights=ck.get("weights"),
            run=str(run),
        )

    def predict(self, rgb: np.ndarray) -> Prediction:
        """(H, W, 3) uint8 RGB -> depth (H, W) metres (None without a depth head) and instances."""
        import cv2
        import torch
        import torch.nn.functional as F

        from labeler.models.precision import autocast
        from labeler.train.heads.data import normalise, resized_shape
        from labeler.train.heads.instances import instances_from_maps, sigmoid

        h, w = rgb.shape[:2]
        rh, rw = resized_shape(h, w, self.model_config.input_size)
        x = normalise(cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR))
        with torch.no_grad(), autocast(self.device, True):  # bf16 on CUDA (see models/precision.py)
            out = self.model(x[None].to(self.device))
        class_prob: np.ndarray | None = None
        if "class_logits" in out:  # (C + 1, H, W) class probabilities at the image's size
            up = F.interpolate(
                out.pop("class_logits").float(), size=(h, w), mode="bilinear", align_corners=False
            )
            class_prob = up[0].softmax(0).cpu().numpy()
        maps = {
            k: F.interpolate(v[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            .cpu()
            .numpy()
            for k, v in out.items()
        }
        depth = maps.get("depth")
        if "objectness" in maps:
            ids, scores = instances_from_maps(
                sigmoid(maps["objectness"]), sigmoid(maps["boundary"]), depth, self.instances
            )
        else:
            ids, scores = np.zeros((h, w), np.uint16), np.zeros(0, np.float32)
        names = None
        classes = self.model_config.classes
        if class_prob is not None and classes is not None:
            names = instance_classes(ids, class_prob, classes)
        return Prediction(
            depth_m=None if depth is None else depth.astype(np.float32),
            ids=ids,
            scores=scores,
            class_names=names,
        )


def instance_classes(ids: np.ndarray, class_prob: np.ndarray, classes: tuple[str, ...]) -> tuple[str, ...]:
    """Each instance's class: the class (not "no object") of highest mean probability over its pixels.

    Args:
        ids: (H, W) instance ids 1..K (0: none).
        class_prob: (C + 1, H, W) class probabilities, channel 0 = no object.
    """
    k = int(ids.max()) if ids.size else 0
    flat = ids.ravel()
    sums = np.stack([np.bincount(flat, weights=p.ravel(), minlength=k + 1) for p in class_prob[1:]])
    return tuple(classes[int(j)] for j in sums[:, 1:].argmax(axis=0)) if k else ()
