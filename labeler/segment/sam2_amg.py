"""`sam2` masks: automatic mask generation with the official SAM2 model, at dataset throughput.

The steps and every threshold are those of the official `SAM2AutomaticMaskGenerator` (sam2 1.1.0), run
on the official modules and helpers (`SAM2Base` encoder / prompt encoder / mask decoder, `SAM2Transforms`,
`sam2.utils.amg`, torchvision's `batched_nms`), with the settings of `Sam2Config`:

1. crops: the whole image, plus `crop_n_layers` layers of overlapping crops (`crop_overlap_ratio`);
2. per crop, the image encoder runs once; a grid of `points_per_side`² point prompts (divided by
   `crop_n_points_downscale_factor` per layer) goes through the decoder `points_per_batch` at a time,
   each giving 3 masks (`multimask_output`) or 1;
3. per batch: keep predicted IoU > `pred_iou_thresh`, stability (IoU of the mask thresholded at
   `mask_threshold` ± `stability_score_offset`) >= `stability_score_thresh`, masks not cut by a crop
   edge; per crop, box NMS at `box_nms_thresh` by predicted IoU; across crops, NMS at `crop_nms_thresh`
   preferring smaller crops.

What differs from the official generator is only where results live: masks stay boolean tensors on
the model's device from the decoder to the end (no per-mask RLE encode and decode on the host), and
come back once, sorted by score, as `Masks` (score = predicted IoU clipped to [0, 1], stability =
the stability score). Device memory for results is N_kept x H x W bytes (bool), plus one batch of
float32 logits at crop size (points_per_batch x 3 x H x W x 4 bytes), as in the official generator.
Masks left empty after thresholding are dropped (the official generator keeps them when both
thresholds are 0; they would carry a NaN stability).

On CUDA the encoder and decoder run under bfloat16 autocast (`mixed_precision`); post-processing is
float32 on the GPU. On the CPU everything is float32 (the tests run the autocast body under CPU bf16,
labeler/models/precision.py).

`min_mask_region_area` (official semantics): before upsampling, background components of the 256 x 256
low-resolution mask logits of at most that many low-resolution pixels are filled and foreground ones
removed (8-connectivity). The official package does this with its optional CUDA extension `sam2._C`;
without it (installed with SAM2_BUILD_CUDA=0, or on the CPU) the official generator warns and silently
skips the step. Here a SciPy fallback computes the same components on the host instead, so the knob
has the same effect whether or not the extension was built (at the cost of a device-host round trip
of the low-resolution logits per batch, only when the knob is > 0).

Importing this module does not import torch or sam2; the model is loaded once per backend instance,
on first use, and is not pickled with the instance.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data_schema.backends import Sam2Config
from data_schema.manifest import TrackingConfig
from labeler.segment.base import MASK_BACKENDS, LoadsOnFirstUse, MaskBackend, Masks, check_images
from labeler.segment.sam2_model import CHECKPOINT_FLAG, Sam2WeightsError, check_checkpoint, resolve_config

if TYPE_CHECKING:
    import torch
    from sam2.modeling.sam2_base import SAM2Base

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Features:
    """Image features of one crop: the lowest-resolution embedding and the high-resolution maps."""

    embed: torch.Tensor  # (1, C, h/16, w/16) at model input size
    high_res: list[torch.Tensor]  # [(1, C/8, h/4, w/4), (1, C/4, h/8, w/8)]


@dataclass(frozen=True)
class _Proposals:
    """Masks of one batch or crop, on the device; boxes XYXY in the frame the masks are in."""

    masks: torch.Tensor  # (N, h, w) bool
    iou: torch.Tensor  # (N,) float32
    stability: torch.Tensor  # (N,) float32
    boxes: torch.Tensor  # (N, 4) int


@MASK_BACKENDS.register
class Sam2MaskBackend(LoadsOnFirstUse, MaskBackend[Sam2Config]):
    """SAM2 automatic masks; see the module docstring for the steps.

    Args:
        config: the generator settings; `config.checkpoint` (`--sam2-checkpoint`) and `config.config`
            (`--sam2-config`) name the weights and the architecture.
        device: "cpu" or a CUDA device ("cuda", "cuda:1").

    Raises:
        Sam2ConfigError, Sam2WeightsError: (at construction) unknown config or missing checkpoint file;
            (at first use) an unreadable checkpoint or keys / shapes that do not match the config.
    """

    config_type = Sam2Config

    @classmethod
    def check_config(cls, config: Sam2Config) -> None:
        """An unknown --sam2-config or a missing --sam2-checkpoint fails the run before any sample."""
        from labeler.models.checkpoints import non_finite_problem

        resolve_config(config.config)
        path = check_checkpoint(config.checkpoint, config.config)
        problem = non_finite_problem(path)
        if problem:
            raise Sam2WeightsError(f"{path}: {problem}; pass {CHECKPOINT_FLAG} a good checkpoint")

    def __init__(self, config: Sam2Config, *, device: str = "cpu") -> None:
        self.config = config
        self.device = device
        self.config_path = resolve_config(config.config)
        self.checkpoint = check_checkpoint(config.checkpoint, config.config)

    @property
    def model(self) -> SAM2Base:
        """The network, loaded on first access (strictly, eval mode, on `device`)."""
        return self._loaded().model

    def masks(self, image: np.ndarray, *, disparity_px: np.ndarray | None = None) -> Masks:
        """Automatic masks of one image; `disparity_px` is checked for size and otherwise unused."""
        return self.masks_many([image], disparities_px=[disparity_px])[0]

    def masks_many(
        self, images: Sequence[np.ndarray], *, disparities_px: Sequence[np.ndarray | None] | None = None
    ) -> list[Masks]:
        """Automatic masks of several images; their full-image encodings share one encoder batch."""
        check_images(images, disparities_px)
        if not images:  # no encoder batch to stack
            return []
        import torch

        run = self._loaded()
        out = []
        with torch.inference_mode():
            images = [np.ascontiguousarray(image) for image in images]
            for image, features in zip(images, run.encode_many(images), strict=True):
                found = run.generate(image, full_image_features=features)
                order = torch.argsort(found.iou, descending=True, stable=True)
                out.append(
                    Masks(
                        masks=found.masks[order].cpu().numpy(),
                        scores=found.iou[order].clamp(0, 1).cpu().numpy().astype(np.float32),
                        stability=found.stability[order].clamp(0, 1).cpu().numpy().astype(np.float32),
                    )
                )
        return out

    def track_masks(
        self, frames: Sequence[np.ndarray], *, tracking: TrackingConfig, min_area_px: int = 1
    ) -> list[Masks]:
        """A sequence chunk's masks: automatic masks on keyframes, the official SAM2 video predictor in
        between (labeler/segment/sam2_video.py); each mask's `track_ids` entry is its object's id."""
        from labeler.segment.sam2_video import track_chunk

        check_images(frames)
        return track_chunk(self, frames, tracking=tracking, min_area_px=min_area_px)

    def _loaded(self) -> _Loaded:
        return self._load_once(lambda: _Loaded(self.config, self.device))


class _Loaded:
    """The model and the per-run constants (point grids, transforms) of one backend instance."""

    def __init__(self, config: Sam2Config, device: str) -> None:
        import torch

        from labeler.models.precision import autocasts
        from labeler.segment.sam2_model import import_sam2, load_sam2

        import_sam2()  # first: any `sam2.*` import runs its hydra-initialising __init__
        from sam2.utils.amg import build_all_layer_point_grids

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: CUDA is not available here; use --gpu only on a GPU machine"
            )
        self.config = config
        self.device = dev
        # the official video predictor's class: the same modules for automatic masks, and its
        # propagation and memory for `track_masks` (one copy of the weights for both)
        self.model = load_sam2(config.config, config.checkpoint, device=device, video=True)
        self.amp = autocasts(dev, config.mixed_precision)  # on CUDA (models/precision.py)
        self.grids = build_all_layer_point_grids(
            config.points_per_side, config.crop_n_layers, config.crop_n_points_downscale_factor
        )
        area = config.min_mask_region_area
        self.host_fill = area > 0 and not (dev.type == "cuda" and _has_cuda_extension())
        if self.host_fill:
            log.info(
                "sam2: min_mask_region_area=%d uses the SciPy connected-components fallback (the CUDA "
                "extension sam2._C is not built or the device is not CUDA)",
                area,
            )
        from sam2.utils.transforms import SAM2Transforms

        with warnings.catch_warnings():  # SAM2Transforms scripts its resize with the deprecated torch.jit
            warnings.simplefilter("ignore", FutureWarning)
            self.transforms = SAM2Transforms(
                resolution=self.model.image_size,
                mask_threshold=0.0,  # as the official generator's predictor: holes are defined at logit 0
                max_hole_area=0 if self.host_fill else area,
                max_sprinkle_area=0 if self.host_fill else area,
            )

    # ------------------------------------------------------------------------------------------ steps

    def generate(self, image: np.ndarray, *, full_image_features: _Features | None = None) -> _Proposals:
        """All crops' masks of one image; `full_image_features` (from encode_many) skips re-encoding
        the layer-0 crop, which is the whole image."""
        import torch
        from sam2.utils.amg import generate_crop_boxes
        from torchvision.ops.boxes import batched_nms, box_area

        cfg = self.config
        h, w = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes((h, w), cfg.crop_n_layers, cfg.crop_overlap_ratio)
        found = [
            self._crop(image, box, layer, features=full_image_features if layer == 0 else None)
            for box, layer in zip(crop_boxes, layers, strict=True)
        ]
        out = _cat(found)
        if len(crop_boxes) > 1:  # duplicates between crops: prefer masks from smaller crops
            crop_of = torch.cat(
                [torch.full((len(p.iou),), i, device=self.device) for i, p in enumerate(found)]
            )
            areas = box_area(torch.as_tensor(crop_boxes, dtype=torch.float32, device=self.device))
            keep = batched_nms(
                out.boxes.float(), 1 / areas[crop_of], _one_category(out), iou_threshold=cfg.crop_nms_thresh
            )
            out = _take(out, keep)
        return out

    def _crop(
        self, image: np.ndarray, crop_box: list[int], layer: int, *, features: _Features | None = None
    ) -> _Proposals:
        """Masks of one crop, NMS-filtered, in full-image coordinates."""
        from sam2.utils.amg import uncrop_boxes_xyxy, uncrop_masks
        from torchvision.ops.boxes import batched_nms

        cfg = self.config
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        size = crop.shape[:2]
        features = features if features is not None else self.encode_many([crop])[0]
        points = self.grids[layer] * np.array(size)[None, ::-1]  # normalised (x, y) -> crop px
        batches = [
            self._batch(features, points[i : i + cfg.points_per_batch], size, crop_box, image.shape[:2])
            for i in range(0, len(points), cfg.points_per_batch)
        ]
        found = _cat(batches)
        keep = batched_nms(
            found.boxes.float(), found.iou, _one_category(found), iou_threshold=cfg.box_nms_thresh
        )
        found = _take(found, keep)
        h, w = image.shape[:2]
        return _Proposals(
            masks=uncrop_masks(found.masks, crop_box, h, w),
            iou=found.iou,
            stability=found.stability,
            boxes=uncrop_boxes_xyxy(found.boxes, crop_box),
        )

    def encode_many(self, crops: list[np.ndarray]) -> list[_Features]:
        """Run the image encoder once over a batch of crops (each resized to the model's square input)."""
        import torch

        x = torch.stack(
            [
                self.transforms.transforms(
                    torch.from_numpy(np.ascontiguousarray(c))
                    .to(self.device)
                    .permute(2, 0, 1)
                    .float()
                    .div(255)
                )
                for c in crops
            ]
        )  # resize to image_size x image_size, ImageNet normalise
        model = self.model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            _, feats, _, sizes = model._prepare_backbone_features(model.forward_image(x))
            if model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + model.no_mem_embed
        n = len(crops)
        maps = [f.permute(1, 2, 0).reshape(n, -1, *hw) for f, hw in zip(feats, sizes, strict=True)]
        return [
            _Features(embed=maps[-1][i : i + 1], high_res=[m[i : i + 1] for m in maps[:-1]]) for i in range(n)
        ]

    def _batch(
        self,
        features: _Features,
        points: np.ndarray,
        size: tuple[int, int],
        crop_box: list[int],
        image_size: tuple[int, int],
    ) -> _Proposals:
        """Decode one batch of point prompts and apply the per-mask filters; masks in crop coordinates."""
        import torch
        from sam2.utils.amg import batched_mask_to_box, calculate_stability_score, is_box_near_crop_edge

        cfg = self.config
        pts = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        coords = self.transforms.transform_coords(pts, normalize=True, orig_hw=size)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
        model = self.model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low_res, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=features.embed,
                image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=cfg.multimask_output,
                repeat_image=coords.shape[0] > 1,
                high_res_features=features.high_res,
            )
        low_res = low_res.float()
        if self.host_fill:
            low_res = fill_small_regions(low_res, cfg.min_mask_region_area)
        logits = self.transforms.postprocess_masks(low_res, size).flatten(0, 1)  # (B*M, h, w) at crop size
        iou = iou.float().flatten(0, 1)
        if cfg.pred_iou_thresh > 0:  # filter before computing more: most masks go here
            keep = iou > cfg.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
        stability = calculate_stability_score(logits, cfg.mask_threshold, cfg.stability_score_offset)
        if cfg.stability_score_thresh > 0:
            keep = stability >= cfg.stability_score_thresh
            logits, iou, stability = logits[keep], iou[keep], stability[keep]
        masks = logits > cfg.mask_threshold
        del logits
        boxes = batched_mask_to_box(masks)
        h, w = image_size
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h]) & masks.flatten(1).any(1)
        return _Proposals(masks=masks[keep], iou=iou[keep], stability=stability[keep], boxes=boxes[keep])


def fill_small_regions(low_res: torch.Tensor, max_area: int) -> torch.Tensor:
    """The official hole / sprinkle removal of mask logits, on the host (SciPy), for when `sam2._C` is absent.

    Args:
        low_res: (B, M, h, w) float32 mask logits (low resolution), on any device.
        max_area: background components (logit <= 0) of at most this many pixels become foreground
            (logit 10), foreground components (logit > 0) that small become background (logit -10);
            8-connectivity within each mask, both measured on the input.

    Returns:
        (B, M, h, w) float32 on the input's device.
    """
    import torch
    from scipy import ndimage

    logits = low_res.detach().cpu().numpy()
    flat = logits.reshape(-1, *logits.shape[-2:])
    out = flat.copy()
    within_mask = np.zeros((3, 3, 3), bool)
    within_mask[1] = True  # 8-connected in (h, w), never across masks
    for region, value in ((flat <= 0.0, 10.0), (flat > 0.0, -10.0)):
        labels, _ = ndimage.label(region, structure=within_mask)
        areas = np.bincount(labels.ravel())
        out[(labels > 0) & (areas[labels] <= max_area)] = value
    return torch.from_numpy(out.reshape(logits.shape)).to(low_res.device)


def _has_cuda_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401 — compiled only when sam2 was built with CUDA
    except ImportError:
        return False
    return True


def _one_category(p: _Proposals) -> torch.Tensor:
    """NMS category ids: all masks in one class (int64 zeros)."""
    import torch

    return torch.zeros(len(p.iou), dtype=torch.int64, device=p.iou.device)


def _cat(parts: list[_Proposals]) -> _Proposals:
    import torch

    return _Proposals(
        masks=torch.cat([p.masks for p in parts]),
        iou=torch.cat([p.iou for p in parts]),
        stability=torch.cat([p.stability for p in parts]),
        boxes=torch.cat([p.boxes for p in parts]),
    )


def _take(p: _Proposals, idx: torch.Tensor) -> _Proposals:
    return _Proposals(masks=p.masks[idx], iou=p.iou[idx], stability=p.stability[idx], boxes=p.boxes[idx])
