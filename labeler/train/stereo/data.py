"""Stereo training items from the shared reader: augmentation that keeps the geometry valid, held-out items.

Training item (one rectified pair, keyed by (epoch, i) like the heads' items, so a resumed run draws the
same augmentations):

1. scale: both images resized by s ~ U(min_scale, max_scale) (at least what the crop needs), the target
   disparity (and its confidence) resized nearest and multiplied by the width ratio;
2. swap-and-flip (probability flip_prob): the new left image is the mirrored right one and the new right
   the mirrored left, so disparities stay positive. The target is then the right view's disparity,
   made from the left one by forward warping (each left pixel x lands at x - d; the nearest surface wins);
   right pixels no left pixel lands on (occluded in the left view) are invalid;
3. a crop of `crop` (multiples of 32) at a random place;
4. asymmetric colour jitter: brightness, contrast, saturation drawn for each image on its own (the network
   input); the unjittered crops travel beside them for the photometric loss.

Geometry is never flipped alone: a mirrored pair without the swap would have negative disparities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labeler.dataset.reader import Dataset
from labeler.train.heads.data import Augment, colour_jitter, to_chw
from labeler.train.stereo.truth import TruthSource

STEREO_ARRAYS = ("left", "right", "disparity_px", "confidence")


def forward_warp(disparity_px: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The right view's disparity and confidence from the left view's, (H, W) float32 each, NaN invalid.

    Each valid left pixel x (finite disparity and confidence) lands at floor(x - d + 1/2) in the right view;
    where several land on one pixel the largest disparity (the nearest surface) wins.
    """
    h, w = disparity_px.shape
    ys, xs = np.nonzero(np.isfinite(disparity_px) & np.isfinite(confidence))
    d = disparity_px[ys, xs].astype(np.float32)
    u = np.floor(xs - d + 0.5).astype(np.int64)  # not np.rint: half-to-even folds d = k + 0.5 into pairs
    inside = (u >= 0) & (u < w)
    ys, xs, u, d = ys[inside], xs[inside], u[inside], d[inside]
    right = np.full((h, w), -np.inf, np.float32)
    np.maximum.at(right, (ys, u), d)
    won = d >= right[ys, u]
    conf = np.full((h, w), np.nan, np.float32)
    conf[ys[won], u[won]] = confidence[ys[won], xs[won]]
    right[~np.isfinite(right)] = np.nan
    return right, conf


def resize_pair_targets(
    images: Sequence[np.ndarray], maps: Sequence[np.ndarray], size_hw: tuple[int, int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images resized (area when shrinking, linear when enlarging) and maps resized nearest (an invalid
    NaN never blends into a valid pixel) to (height, width); disparities are NOT rescaled here."""
    import cv2

    h, w = size_hw
    if images and images[0].shape[:2] == (h, w):
        return list(images), list(maps)
    shrink = h < images[0].shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return (
        [cv2.resize(im, (w, h), interpolation=interp) for im in images],
        [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in maps],
    )


@dataclass(frozen=True)
class StereoAugment:
    """The random draws of one training item."""

    scale: float
    crop_y: float
    crop_x: float
    swap_flip: bool
    left_colour: Augment
    right_colour: Augment

    @classmethod
    def draw(
        cls, rng: np.random.Generator, *, min_scale: float, max_scale: float, flip_prob: float, jitter: float
    ) -> StereoAugment:
        def colour() -> Augment:
            lo, hi = 1 - jitter, 1 + jitter
            b, c, s = (float(rng.uniform(lo, hi)) for _ in range(3))
            return Augment(
                scale=1.0, crop_y=0.0, crop_x=0.0, flip=False, brightness=b, contrast=c, saturation=s
            )

        return cls(
            scale=float(rng.uniform(min_scale, max_scale)),
            crop_y=float(rng.random()),
            crop_x=float(rng.random()),
            swap_flip=bool(rng.random() < flip_prob),
            left_colour=colour(),
            right_colour=colour(),
        )


@dataclass(frozen=True)
class AugmentSettings:
    enabled: bool = True
    min_scale: float = 0.8
    max_scale: float = 1.2
    flip_prob: float = 0.5
    jitter: float = 0.2


def valid_target(disparity_px: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(disparity with 0 where invalid, weight = confidence in [0, 1], 0 where invalid), float32."""
    valid = np.isfinite(disparity_px) & np.isfinite(confidence) & (disparity_px >= 0)
    disp = np.where(valid, disparity_px, 0).astype(np.float32)
    weight = np.where(valid, np.clip(np.nan_to_num(confidence), 0, 1), 0).astype(np.float32)
    return disp, weight


class StereoDataset(torch.utils.data.Dataset):
    """Pairs of a pseudo-label dataset for FoundationStereo training or held-out evaluation.

    Args:
        dataset: a dataset folder (read lazily through `labeler.open_dataset`).
        sample_ids: this split's ids, in the dataset's order.
        train: training items (augmented crops) or held-out items (whole images).
        crop: (height, width) of training crops, multiples of 32, at most the image size.
        augment: the training augmentation (disabled: scale 1, no swap, no jitter, centre crops).
        eval_scale: held-out images are resized by this for the network (targets stay full size).
        truth: held-out truth disparities, where they exist.
        seed: with (epoch, i), what each item draws.

    Training item: left, right (3, h, w) uint8 network input (jittered); left_clean, right_clean the same
    crops unjittered; disparity (h, w) float32 px (0 invalid); weight (h, w) confidence (0 invalid); row.
    Held-out item: left, right (3, h', w') uint8 at eval_scale; disparity_full, confidence_full (H, W)
    float32 NaN invalid; truth (H, W) float32 NaN unknown (all NaN without truth); row.
    """

    def __init__(
        self,
        dataset: str | Path,
        sample_ids: Sequence[str],
        *,
        train: bool,
        crop: tuple[int, int] = (320, 640),
        augment: AugmentSettings = AugmentSettings(),
        eval_scale: float = 1.0,
        truth: TruthSource | None = None,
        seed: int = 0,
    ) -> None:
        from labeler import open_dataset

        reader = open_dataset(dataset)
        where = {s: i for i, s in enumerate(reader.sample_ids)}
        unknown = [s for s in sample_ids if s not in where]
        if unknown:
            raise ValueError(f"{dataset}: sample ids not in the dataset: {unknown[:3]}")
        self.reader: Dataset = reader
        self.rows = [where[s] for s in sample_ids]
        self.sample_ids = list(sample_ids)
        self.train, self.crop, self.augment = train, crop, augment
        self.eval_scale, self.truth, self.seed = eval_scale, truth, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        a = self.reader.read(self.rows[i], STEREO_ARRAYS)
        if self.train:
            return self.train_item(
                a["left"], a["right"], a["disparity_px"], a["confidence"], epoch=epoch, i=i
            )
        truth = self.truth.disparity(self.sample_ids[i]) if self.truth is not None else None
        return self.heldout_item(a["left"], a["right"], a["disparity_px"], a["confidence"], truth, i=i)

    def train_item(
        self,
        left: np.ndarray,
        right: np.ndarray,
        disparity_px: np.ndarray,
        confidence: np.ndarray,
        *,
        epoch: int,
        i: int,
    ) -> dict[str, torch.Tensor]:
        h, w = left.shape[:2]
        ch, cw = self.crop
        s = self.augment
        aug = (
            StereoAugment.draw(
                np.random.default_rng([self.seed, epoch, i]),
                min_scale=s.min_scale,
                max_scale=s.max_scale,
                flip_prob=s.flip_prob,
                jitter=s.jitter,
            )
            if s.enabled
            else None
        )
        # the scale never leaves the image smaller than the crop
        scale = max(aug.scale if aug else 1.0, ch / h, cw / w)
        oh, ow = max(ch, round(h * scale)), max(cw, round(w * scale))
        (left, right), (disp, conf) = resize_pair_targets([left, right], [disparity_px, confidence], (oh, ow))
        disp = disp * np.float32(ow / w)
        if aug is not None and aug.swap_flip:
            disp, conf = forward_warp(disp, conf)
            left, right = right[:, ::-1], left[:, ::-1]
            disp, conf = disp[:, ::-1], conf[:, ::-1]
        y0 = int((oh - ch) * (aug.crop_y if aug else 0.5))
        x0 = int((ow - cw) * (aug.crop_x if aug else 0.5))
        crop = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        left, right, disp, conf = (np.ascontiguousarray(a[crop]) for a in (left, right, disp, conf))
        target, weight = valid_target(disp, conf)
        net_left = colour_jitter(left, aug.left_colour) if aug else left
        net_right = colour_jitter(right, aug.right_colour) if aug else right
        return {
            "left": to_chw(net_left),
            "right": to_chw(net_right),
            "left_clean": to_chw(left),
            "right_clean": to_chw(right),
            "disparity": torch.from_numpy(target),
            "weight": torch.from_numpy(weight),
            "row": torch.tensor(i),
        }

    def heldout_item(
        self,
        left: np.ndarray,
        right: np.ndarray,
        disparity_px: np.ndarray,
        confidence: np.ndarray,
        truth: np.ndarray | None,
        *,
        i: int,
    ) -> dict[str, torch.Tensor]:
        h, w = left.shape[:2]
        size = eval_size(h, w, self.eval_scale)
        (left, right), _ = resize_pair_targets([left, right], [], size)
        truth_full = (
            np.full((h, w), np.nan, np.float32) if truth is None else truth.astype(np.float32, copy=False)
        )
        return {
            "left": to_chw(left),
            "right": to_chw(right),
            "disparity_full": torch.from_numpy(disparity_px.astype(np.float32, copy=False)),
            "confidence_full": torch.from_numpy(confidence.astype(np.float32, copy=False)),
            "truth": torch.from_numpy(truth_full),
            "row": torch.tensor(i),
        }


def eval_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of a held-out image at `scale` (at least 1 px each)."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))
