"""`sam3` masks: every instance of each named class (`--classes "person,forklift"`) with the official SAM 3.

Per batch of up to `batch_size` images, on the official modules of the `sam3` package:

1. each image is resized to the model's square input as the official image predictor does (`Sam3Processor`:
   antialiased bilinear resize of the uint8 image, scaled to [0, 1], normalised with mean = std = 0.5);
2. the image encoder (ViT + neck) runs **once** over the batch; the text encoder ran once, at load, over
   the class names (they are fixed by the config);
3. one grounding pass (`Sam3Image.forward_grounding`: geometry / fusion encoder, DETR decoder,
   segmentation head) runs over every (image, class) pair of the batch together, each pair indexing its
   image's features and its class's text features;
4. per pair, as the official predictor: score = sigmoid(class logit) x sigmoid(presence logit); keep
   scores > `confidence_threshold`; optionally (`det_nms_thresh` > 0) the official mask NMS of the video
   model (`sam3.perflib.nms.nms_masks`) within the class; the kept low-resolution mask logits are
   upsampled bilinearly to the image size and thresholded at probability 0.5.

The official predictor (`set_image` then `set_text_prompt` per class) runs the image encoder once per
image and the text encoder and grounding pass once per (image, class); here images are batched, the
text features are computed once, and all pairs share one grounding pass (`benchmarks/bench_sam3.py`
measures both, with the masks' agreement).

Result: `Masks` sorted by descending score over all classes, `class_names` the class of each mask,
stability 1 (SAM 3 has no stability score), empty masks dropped. Masks of different classes may overlap
(the instance map keeps the better-scored one per pixel). On CUDA the model runs under bfloat16
autocast (`mixed_precision`), as the official examples do; on the CPU everything is float32 (the tests run
the autocast body under CPU bf16, labeler/models/precision.py).

With `--track` and `track_with="video_model"` (the default with --gpu), `track_masks` follows each class's
objects through the official SAM 3 video model instead (segment/sam3_video.py, CUDA only); on the CPU
`--track` links these per-frame masks by association (segment/track.py).

Importing this module does not import torch or sam3; the model is loaded once per backend instance, on
first use, and is not pickled with the instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from data_schema.backends import Sam3Config
from data_schema.manifest import TrackingConfig
from labeler.errors import LabelerError
from labeler.segment.base import MASK_BACKENDS, LoadsOnFirstUse, MaskBackend, Masks, check_images
from labeler.segment.sam3_model import (
    CHECKPOINT_FLAG,
    Sam3WeightsError,
    check_checkpoint,
    find_bpe,
    resolve_arch,
    without_pinned_memory,
)

if TYPE_CHECKING:
    import torch

    from labeler.segment.sam3_video import LoadedVideoModel


@MASK_BACKENDS.register
class Sam3MaskBackend(LoadsOnFirstUse, MaskBackend[Sam3Config]):
    """SAM 3 text-prompted instance masks, one prompt per class; see the module docstring for the steps.

    Args:
        config: the classes, thresholds and files (`--sam3-checkpoint`, `--sam3-bpe-path`, `--sam3-arch`).
        device: "cpu" or a CUDA device ("cuda", "cuda:1").

    Raises:
        Sam3ConfigError, Sam3WeightsError: (at construction) unknown arch, no BPE vocabulary or no
            checkpoint file; (at first use) an unreadable checkpoint or one that does not match the arch.
    """

    config_type = Sam3Config
    _video_state: LoadedVideoModel | None = None  # the video model (`--track`): `_load_once`'s slot "video_"
    _video_error: LabelerError | None = None
    _slots = ("", "video_")

    @classmethod
    def check_config(cls, config: Sam3Config) -> None:
        """A missing checkpoint or vocabulary, an unknown arch, or (for the video model) a checkpoint
        without tracker weights fails the run before any sample."""
        resolve_arch(config.arch)
        from labeler.models.checkpoints import non_finite_problem

        find_bpe(config.bpe_path)
        path = check_checkpoint(config.checkpoint)
        problem = non_finite_problem(path)
        if problem:
            raise Sam3WeightsError(f"{path}: {problem}; pass {CHECKPOINT_FLAG} a good checkpoint")
        if config.track_with == "video_model":
            from labeler.segment.sam3_video_model import tracker_weights_problem

            problem = tracker_weights_problem(path)
            if problem:
                raise Sam3WeightsError(problem)

    def __init__(self, config: Sam3Config, *, device: str = "cpu") -> None:
        self.check_config(config)
        self.config = config
        self.device = device

    @property
    def classes(self) -> tuple[str, ...]:
        assert self.config.classes is not None  # the config refuses None
        return self.config.classes

    @property
    def model(self) -> torch.nn.Module:
        """The `Sam3Image`, loaded on first access (strictly, eval mode, on `device`)."""
        return self._loaded().model

    @property
    def video_model(self) -> torch.nn.Module:
        """The video model (`--track`), loaded on first access (strictly, eval mode, on `device`)."""
        return self._video().model

    def masks(self, image: np.ndarray, *, disparity_px: np.ndarray | None = None) -> Masks:
        """Masks of every class in one image; `disparity_px` is checked for size and otherwise unused."""
        return self.masks_many([image], disparities_px=[disparity_px])[0]

    def masks_many(
        self, images: Sequence[np.ndarray], *, disparities_px: Sequence[np.ndarray | None] | None = None
    ) -> list[Masks]:
        """Masks of several images, `batch_size` images per encoder pass."""
        check_images(images, disparities_px)
        if not images:
            return []
        run = self._loaded()
        step = self.config.batch_size
        return [m for i in range(0, len(images), step) for m in run.detect(list(images[i : i + step]))]

    def track_masks(
        self, frames: Sequence[np.ndarray], *, tracking: TrackingConfig, min_area_px: int = 1
    ) -> list[Masks]:
        """(`--track` with `track_with="video_model"`) a sequence chunk's masks through the official SAM 3
        video model, each with its class and a track id unique over the chunk (segment/sam3_video.py).
        `tracking` and `min_area_px` are unused: the video model's own heuristics start and end objects,
        and the object policy drops small masks after."""
        check_images(frames)
        if not frames:
            return []
        return self._video().track(frames)

    def _video(self) -> LoadedVideoModel:
        """The video model, loaded on first use; a failed load is raised again without reloading."""
        return self._load_once(self._load_video, slot="video_")

    def _load_video(self) -> LoadedVideoModel:
        from labeler.segment.sam3_video import LoadedVideoModel

        return LoadedVideoModel(self.config, self.device)

    def _loaded(self) -> _Loaded:
        return self._load_once(lambda: _Loaded(self.config, self.device))


class _Loaded:
    """The model, its text features of the classes and the input size of one backend instance."""

    def __init__(self, config: Sam3Config, device: str) -> None:
        import torch

        from labeler.models.precision import autocasts
        from labeler.segment.sam3_model import load_sam3

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available here; use --gpu only on a GPU machine"
            )
        assert config.classes is not None
        self.config = config
        self.classes = config.classes
        self.device = dev
        self.resolution = resolve_arch(config.arch).resolution
        self.model = load_sam3(config.arch, config.checkpoint, config.bpe_path, device=device)
        self.amp = autocasts(dev, config.mixed_precision)  # on CUDA (models/precision.py)
        with torch.inference_mode(), self._autocast():
            self.text = self.model.backbone.forward_text(list(self.classes), device=dev)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, 3, R, R) float32 model input, as the official predictor's transform makes it."""
        import torch
        from torchvision.transforms.v2 import functional as tvf

        side = [self.resolution, self.resolution]
        x = [
            tvf.resize(
                torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1),
                side,
                antialias=True,
            )
            for im in images
        ]
        return torch.stack(x).float().div(255).sub(0.5).div(0.5)

    def detect(self, images: list[np.ndarray]) -> list[Masks]:
        """Every class's detections in a batch of images: one encoder pass, one grounding pass."""
        import torch
        from sam3.model.data_misc import FindStage

        n_img, n_cls = len(images), len(self.classes)
        dev = self.device
        with torch.inference_mode(), self._autocast(), without_pinned_memory():
            backbone_out = self.model.backbone.forward_image(self.preprocess(images))
            backbone_out.update(self.text)
            pairs = n_img * n_cls  # pair p = image p // n_cls, class p % n_cls
            find = FindStage(
                img_ids=torch.arange(n_img, device=dev).repeat_interleave(n_cls),
                text_ids=torch.arange(n_cls, device=dev).repeat(n_img),
                input_boxes=None,
                input_boxes_mask=None,
                input_boxes_label=None,
                input_points=None,
                input_points_mask=None,
            )
            out = self.model.forward_grounding(
                backbone_out=backbone_out,
                find_input=find,
                geometric_prompt=self.model._get_dummy_prompt(num_prompts=pairs),
                find_target=None,
            )
            probs = out["pred_logits"].float().sigmoid().squeeze(-1)  # (P, Q)
            probs = probs * out["presence_logit_dec"].float().sigmoid()  # (P, 1): is the class there at all
            logits = out["pred_masks"].float()  # (P, Q, h, w)
        return [
            self._finish(images[i], probs[i * n_cls : (i + 1) * n_cls], logits[i * n_cls : (i + 1) * n_cls])
            for i in range(n_img)
        ]

    def _finish(self, image: np.ndarray, probs: torch.Tensor, logits: torch.Tensor) -> Masks:
        """One image's pairs (C, Q) / (C, Q, h, w) -> its `Masks` at image size."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        h, w = image.shape[:2]
        chunks, scores, names = [], [], []
        for c, name in enumerate(self.classes):
            keep = probs[c] > cfg.confidence_threshold
            if cfg.det_nms_thresh > 0:
                from sam3.perflib.nms import nms_masks

                keep &= nms_masks(probs[c], logits[c], cfg.confidence_threshold, cfg.det_nms_thresh)
            if not keep.any():
                continue
            up = F.interpolate(logits[c][keep][:, None], (h, w), mode="bilinear", align_corners=False)[:, 0]
            prob = up.sigmoid_()  # in place: the official threshold is on the probability, at 0.5
            nonempty = prob.flatten(1).amax(1) > 0.5  # cheaper than .any() of the thresholded masks
            if not nonempty.any():
                continue
            mask = prob > 0.5
            chunks.append(mask if bool(nonempty.all()) else mask[nonempty])
            scores.append(probs[c][keep][nonempty])
            names += [name] * len(chunks[-1])
        if not chunks:
            empty = np.zeros(0, np.float32)
            return Masks(np.zeros((0, h, w), bool), empty, empty.copy(), class_names=())
        s = torch.cat(scores)
        order = torch.argsort(s, descending=True, stable=True).cpu().numpy()
        place = np.empty_like(order)
        place[order] = np.arange(len(order))  # where each mask goes in the sorted output
        out = np.empty((len(order), h, w), bool)
        start = 0
        for chunk in chunks:  # one copy per class straight into its sorted places (no concatenation)
            out[place[start : start + len(chunk)]] = chunk.cpu().numpy()
            start += len(chunk)
        return Masks(
            masks=out,
            scores=s.clamp(0, 1).cpu().numpy().astype(np.float32)[order],
            stability=np.ones(len(order), np.float32),
            class_names=tuple(names[i] for i in order),
        )
