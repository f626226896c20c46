"""SAM2 training items from a pseudo-label dataset: the left image at the model's input size and its target
masks, one per object that may be a target.

An object is a target unless a person rejected it or its sample in review (`labeler review`; kept with
`include_rejected`), its mask score is below `min_score`, or its area (px at the stored resolution) below
`min_area`. Images are resized to the model's square input as SAM2's own transforms do (bilinear with
antialiasing, aspect not kept); masks are area-resized and thresholded at one half, so a thin part keeps
what it covers. Items are addressed by `(epoch, i)`: which objects a training image contributes (at most
`n_objects`, drawn without replacement, as the official `max_num_objects`) and the seed of its prompts
depend only on (seed, epoch, i), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_ARRAYS = ("left", "instance_ids")


@dataclass(frozen=True)
class TargetObjects:
    """The target object ids of each sample id, and how many objects each rule turned away."""

    ids: dict[str, list[int]]  # sample_id -> object ids (ascending), only samples with at least one
    total: int
    low_score: int
    small: int
    rejected: int

    @property
    def kept(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def describe(self) -> str:
        return (
            f"{self.total} objects: {self.low_score} below --min-score, {self.small} below --min-area, "
            f"{self.rejected} rejected in review"
        )


def target_objects(
    reader, sample_ids: Sequence[str], *, min_score: float, min_area: int, include_rejected: bool
) -> TargetObjects:
    """The objects of `sample_ids` that may be targets (see the module docstring); reads one table."""
    from labeler.dataset.decisions import load_decisions

    wanted = set(sample_ids)
    rows = reader.objects.to_table(columns=["sample_id", "id", "area_px", "score"]).to_pylist()
    rejected_samples: set[str] = set()
    rejected_objects: dict[str, set[int]] = {}
    if not include_rejected:
        decisions = load_decisions(reader)
        rejected_samples, rejected_objects = decisions.rejected_samples, decisions.rejected_objects
    ids: dict[str, list[int]] = {}
    total = low = small = rejected = 0
    for r in rows:
        s, oid = str(r["sample_id"]), int(r["id"])
        if s not in wanted:
            continue
        total += 1
        if s in rejected_samples or oid in rejected_objects.get(s, set()):
            rejected += 1
        elif r["score"] < min_score:
            low += 1
        elif r["area_px"] < min_area:
            small += 1
        else:
            ids.setdefault(s, []).append(oid)
    return TargetObjects({s: sorted(v) for s, v in ids.items()}, total, low, small, rejected)


def resize_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) uint8: bilinear with antialiasing, as SAM2Transforms' Resize on a tensor."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def resize_masks(instance_ids: np.ndarray, ids: Sequence[int], size: int) -> torch.Tensor:
    """(len(ids), size, size) bool: each object's pixels, area-resized, kept where they cover half or more."""
    import cv2

    out = torch.zeros((len(ids), size, size), dtype=torch.bool)
    for k, oid in enumerate(ids):
        cover = cv2.resize(
            (instance_ids == oid).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA
        )
        out[k] = torch.from_numpy(cover >= 0.5)
    return out


class Sam2Dataset(torch.utils.data.Dataset):
    """Items for SAM2: image, up to `n_objects` target masks, which of them are real, reader row, prompt seed.

    Args:
        dataset: a dataset folder (read lazily through `labeler.open_dataset`).
        targets: `target_objects(...).ids` of this split: samples without a target are left out.
        sample_ids: the ids of this split, in the dataset's order.
        image_size: the model's square input side (px).
        n_objects: objects per item; fewer are padded with empty masks marked not valid.
        train: draw which objects (else the first `n_objects` by id).
        seed: seed of the draws.

    Item (a dict of tensors): image (3, S, S) uint8 RGB; masks (n_objects, S, S) bool; valid (n_objects,)
    bool; row () int64 (the reader's index: the key of the embedding cache); seed () int64 (prompt draws).
    """

    def __init__(
        self,
        dataset: str | Path,
        sample_ids: Sequence[str],
        targets: dict[str, list[int]],
        *,
        image_size: int,
        n_objects: int,
        train: bool,
        seed: int = 0,
    ) -> None:
        from labeler import open_dataset

        self.reader = open_dataset(dataset)
        where = {s: i for i, s in enumerate(self.reader.sample_ids)}
        unknown = [s for s in sample_ids if s not in where]
        if unknown:
            raise ValueError(f"{dataset}: sample ids not in the dataset: {unknown[:3]}")
        self.sample_ids = [s for s in sample_ids if targets.get(s)]
        self.rows = [where[s] for s in self.sample_ids]
        self.objects = [list(targets[s]) for s in self.sample_ids]
        self.image_size, self.n_objects, self.train, self.seed = image_size, n_objects, train, seed

    def __len__(self) -> int:
        return len(self.rows)

    def chosen(self, epoch: int, i: int) -> list[int]:
        """The object ids item (epoch, i) carries."""
        ids = self.objects[i]
        if not self.train or len(ids) <= self.n_objects:
            return ids[: self.n_objects]
        rng = np.random.default_rng([self.seed, epoch, i])
        return sorted(int(v) for v in rng.choice(ids, self.n_objects, replace=False))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        a = self.reader.read(self.rows[i], TRAIN_ARRAYS)
        ids = self.chosen(epoch, i)
        s, k = self.image_size, self.n_objects
        masks = torch.zeros((k, s, s), dtype=torch.bool)
        masks[: len(ids)] = resize_masks(a["instance_ids"], ids, s)
        valid = masks.flatten(1).any(1)  # an object too small for the input size is no target
        seed = int(np.random.default_rng([self.seed, epoch, i, 1]).integers(2**62))
        return {
            "image": resize_image(a["left"], s),
            "masks": masks,
            "valid": valid,
            "row": torch.tensor(self.rows[i], dtype=torch.int64),
            "seed": torch.tensor(seed, dtype=torch.int64),
        }
