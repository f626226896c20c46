"""Training samples from the shared reader: resize, consistent augmentation, loss targets.

A `HeadsDataset` indexes a pseudo-label dataset through `labeler.open_dataset` (one sample read per
item, nothing loaded up front; it pickles into DataLoader workers without its open store). Items are
addressed by `(epoch, i)` so an augmentation depends only on (seed, epoch, sample) and a resumed run
draws exactly what an uninterrupted one would, with any number of workers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Protocol

import numpy as np
import torch

from labeler.dataset.reader import Dataset
from labeler.models.dinov2_dpt import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE

TRAIN_ARRAYS = ("left", "depth_m", "confidence", "instance_ids")

log = logging.getLogger(__name__)
EDGE_RADIUS_PX = 1  # boundary band: object pixels within this many px of another id (at training scale)
EDGE_DEPTH_JUMP = 0.08  # relative depth step inside an object that also counts as a boundary


class _Samples(Protocol):
    def __getitem__(self, i: int): ...  # -> labeler.dataset.reader.Sample


def object_classes(reader: Dataset, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per sample id, a lookup object id -> class index (1.. in `classes` order; 0: no object).

    Raises:
        LabelerError: the dataset's class list is not `classes` (a model of one class list does not train
            on another's labels).
    """
    from labeler.errors import LabelerError

    have = reader.manifest.classes
    if tuple(have or ()) != classes:
        raise LabelerError(
            f"{reader.path}: its classes {list(have) if have else 'none (class-agnostic)'} differ from the "
            f"model's {list(classes)}; train on datasets of one class list"
        )
    table = reader.objects.to_table(columns=["sample_id", "id", "class_name"]).to_pydict()
    index = {c: k for k, c in enumerate(classes, 1)}
    top: dict[str, int] = {}
    for sid, oid in zip(table["sample_id"], table["id"], strict=True):
        top[sid] = max(top.get(sid, 0), oid)
    out = {sid: np.zeros(n + 1, np.int64) for sid, n in top.items()}
    for sid, oid, name in zip(table["sample_id"], table["id"], table["class_name"], strict=True):
        out[sid][oid] = index.get(name, 0)
    return out


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the short side at `short_side` and both sides rounded to multiples of 14."""
    scale = short_side / min(height, width)

    def snap(v: float) -> int:
        return max(PATCH_SIZE, round(v * scale / PATCH_SIZE) * PATCH_SIZE)

    return snap(height), snap(width)


def to_chw(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) uint8 tensor (items stay uint8: 4x fewer bytes to move)."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def normalise_batch(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 with the ImageNet mean/std, on the images' device (GPU in training)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device)[:, None, None] * 255
    std = torch.tensor(IMAGENET_STD, device=images.device)[:, None, None] * 255
    return (images.float() - mean) / std


def normalise(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, ImageNet mean/std."""
    return normalise_batch(to_chw(rgb)[None])[0]


def edge_targets(
    ids: np.ndarray, depth_m: np.ndarray, *, radius: int = EDGE_RADIUS_PX, rel_jump: float = EDGE_DEPTH_JUMP
) -> np.ndarray:
    """(H, W) bool: object pixels within `radius` of another id, or across a relative depth step
    larger than `rel_jump` inside the (2r+1)-window where all depths are valid."""
    import cv2

    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    f = ids.astype(np.float32)
    fg = ids > 0
    edges = fg & ((cv2.dilate(f, k) != f) | (cv2.erode(f, k) != f))
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if rel_jump > 0 and valid.any():
        d = np.where(valid, depth_m, 0).astype(np.float32)
        all_valid = cv2.erode(valid.astype(np.uint8), k).astype(bool)
        hi, lo = cv2.dilate(d, k), cv2.erode(d, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            jump = all_valid & (hi > lo * (1 + rel_jump))
        edges |= fg & jump
    return edges


@dataclass(frozen=True)
class Augment:
    """Random draws of one item: scale >= 1 before the crop, crop offset fractions, flip, colour factors."""

    scale: float
    crop_y: float
    crop_x: float
    flip: bool
    brightness: float
    contrast: float
    saturation: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Augment:
        return cls(
            scale=float(rng.uniform(1.0, 1.3)),
            crop_y=float(rng.random()),
            crop_x=float(rng.random()),
            flip=bool(rng.random() < 0.5),
            brightness=float(rng.uniform(0.8, 1.2)),
            contrast=float(rng.uniform(0.8, 1.2)),
            saturation=float(rng.uniform(0.8, 1.2)),
        )


def colour_jitter(rgb: np.ndarray, aug: Augment) -> np.ndarray:
    """Brightness, contrast and saturation factors on a uint8 RGB image (geometry untouched)."""
    x = rgb.astype(np.float32)
    x *= aug.brightness
    mean = float(x.mean(dtype=np.float32))
    x -= mean
    x *= aug.contrast
    x += mean
    grey = x.mean(axis=2, keepdims=True, dtype=np.float32)
    x -= grey
    x *= aug.saturation
    x += grey
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


class HeadsDataset(torch.utils.data.Dataset):
    """Items for the heads: image, metric depth + weight, objectness and edge targets, instance ids.

    Args:
        dataset: a dataset folder (read lazily through `labeler.open_dataset`).
        sample_ids: the ids of this split, in the dataset's order.
        input_size: short side (multiple of 14). Training items are input_size x input_size crops of the
            image resized to short side input_size * U(1, 1.3); evaluation items the whole image resized.
        train: draw augmentations (with `augment`) and crop.
        max_depth_m: depths beyond it get weight 0.
        source: anything indexable like the reader (e.g. a list of Samples, for the memory benchmark);
            default the reader itself.
        include_rejected: keep what a review rejected (labeler/review). By default a rejected sample is
            left out of the split and a rejected object is not an object: its pixels become id 0.

    Item (a dict of tensors): image (3, H, W) uint8 (normalise on the device: `normalise_batch`);
    depth (H, W) m (0 where invalid); weight (H, W) confidence (0 invalid); fg, edges (H, W) float
    {0, 1}; ids (H, W) int64; row () int64.
    """

    def __init__(
        self,
        dataset: str | Path,
        sample_ids: Sequence[str],
        *,
        input_size: int,
        train: bool,
        augment: bool = True,
        max_depth_m: float = 20.0,
        seed: int = 0,
        source: _Samples | None = None,
        include_rejected: bool = False,
        classes: tuple[str, ...] | None = None,
    ) -> None:
        from labeler import open_dataset
        from labeler.dataset.decisions import load_decisions

        reader = open_dataset(dataset)
        # With classes, items carry a class map "cls": per sample, object id -> class index (0: none).
        self.class_of: dict[str, np.ndarray] | None = None
        if classes is not None:
            self.class_of = object_classes(reader, classes)
        where = {s: i for i, s in enumerate(reader.sample_ids)}
        unknown = [s for s in sample_ids if s not in where]
        if unknown:
            raise ValueError(f"{dataset}: sample ids not in the dataset: {unknown[:3]}")
        self.rejected_objects: dict[int, list[int]] = {}  # reader index -> object ids to erase
        if not include_rejected:
            decisions = load_decisions(reader)
            sample_ids = decisions.kept(sample_ids)
            self.rejected_objects = {
                where[s]: sorted(ids) for s, ids in decisions.rejected_objects.items() if s in where
            }
        self.rows = [where[s] for s in sample_ids]
        self.sample_ids = list(sample_ids)
        self.source: _Samples = source if source is not None else reader
        self.input_size, self.train, self.augment = input_size, train, augment
        self.max_depth_m, self.seed = max_depth_m, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        row = self.rows[i]
        if isinstance(self.source, Dataset):  # read only what training uses, not both images
            s = SimpleNamespace(**self.source.read(row, TRAIN_ARRAYS))
        else:
            s = self.source[row]
        if row in self.rejected_objects:  # a rejected mask is no object
            ids = s.instance_ids.copy()
            ids[np.isin(ids, self.rejected_objects[row])] = 0
            s = SimpleNamespace(**{**{n: getattr(s, n) for n in TRAIN_ARRAYS}, "instance_ids": ids})
        return self.item(s, epoch=epoch, i=i)

    def item(self, s, *, epoch: int, i: int) -> dict[str, torch.Tensor]:
        import cv2

        h, w = s.left.shape[:2]
        aug = None
        if self.train and self.augment:
            aug = Augment.draw(np.random.default_rng([self.seed, epoch, i]))
        scale = aug.scale if aug else 1.0
        oh, ow = resized_shape(h, w, math.ceil(self.input_size * scale))
        image = cv2.resize(s.left, (ow, oh), interpolation=cv2.INTER_AREA if oh < h else cv2.INTER_LINEAR)
        maps = [
            cv2.resize(a, (ow, oh), interpolation=cv2.INTER_NEAREST)
            for a in (s.depth_m, s.confidence, s.instance_ids)
        ]
        if self.train:
            c = self.input_size
            y0 = int((oh - c) * (aug.crop_y if aug else 0.5)) if oh > c else 0
            x0 = int((ow - c) * (aug.crop_x if aug else 0.5)) if ow > c else 0
            image = image[y0 : y0 + c, x0 : x0 + c]
            maps = [a[y0 : y0 + c, x0 : x0 + c] for a in maps]
        if aug is not None:
            if aug.flip:
                image = image[:, ::-1]
                maps = [a[:, ::-1] for a in maps]
            image = colour_jitter(image, aug)
        depth, conf, ids = (np.ascontiguousarray(a) for a in maps)
        valid = np.isfinite(depth) & (depth > 0) & (depth <= self.max_depth_m) & np.isfinite(conf)
        weight = np.where(valid, np.clip(np.nan_to_num(conf), 0, 1), 0).astype(np.float32)
        edges = edge_targets(ids, depth)
        extra = {}
        if self.class_of is not None:
            lut = self.class_of.get(self.sample_ids[i], np.zeros(1, np.int64))
            extra["cls"] = torch.from_numpy(lut[np.minimum(ids, len(lut) - 1)].astype(np.int64))
        return {
            **extra,
            "image": to_chw(image),
            "depth": torch.from_numpy(np.where(valid, depth, 0).astype(np.float32)),
            "weight": torch.from_numpy(weight),
            "fg": torch.from_numpy((ids > 0).astype(np.float32)),
            "edges": torch.from_numpy(edges.astype(np.float32)),
            "ids": torch.from_numpy(ids.astype(np.int64)),
            "row": torch.tensor(i),
        }
