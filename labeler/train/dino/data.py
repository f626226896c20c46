"""Multi-crop views and iBOT block masks for `labeler adapt-backbone`, drawn reproducibly per item.

An item is one image (a dataset sample's left image, or a file of an image folder) turned into the
DINOv2 views: 2 global crops (random resized crop of scale `global_scale`, flip, colour jitter with
probability 0.8, greyscale 0.2; the first blurred always, the second blurred with probability 0.1 and
solarised with probability 0.2), `n_local` local crops (scale `local_scale`, blurred with probability
0.5), and one block mask per global crop (with probability `mask_probability`, covering a share of the
patches drawn from `mask_ratio`, as rectangles of log-uniform aspect ratio). Every draw comes from
(seed, epoch, item), so a resumed run sees exactly what an uninterrupted one would. Held-out items use
one fixed draw per image, so their loss is comparable from epoch to epoch.

Differences from the official recipe, on purpose: the masked share is drawn per crop rather than spread
over the batch (the same expectation, independent of the batch size), and the colour-jitter factors are
applied in a fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labeler.models.dinov2_dpt import PATCH_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HELDOUT_EPOCH = 2**31 - 1  # the rng key of the held-out views: never a training epoch
ASPECT = (3 / 4, 4 / 3)  # random resized crop's aspect-ratio range
MASK_ASPECT = 0.3  # block masks: aspect ratios in (0.3, 1/0.3)
MASK_MIN_PATCHES = 4
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class CropSettings:
    """The multi-crop recipe (sizes in px, multiples of 14; scales are shares of the image area)."""

    global_size: int = 224
    local_size: int = 98
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    mask_probability: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)

    @property
    def grid(self) -> int:
        """Patches per side of a global crop."""
        return self.global_size // PATCH_SIZE


def block_mask(rng: np.random.Generator, grid: int, n_masked: int) -> np.ndarray:
    """(grid, grid) bool with about `n_masked` patches set, as rectangles of about 4 patches or more.

    Rectangles are added until the count is reached; one that would overshoot the remaining count or adds
    nothing new is drawn again (10 tries), and masking stops when none fits.
    """
    mask = np.zeros((grid, grid), bool)
    most = max(MASK_MIN_PATCHES, int(0.5 * grid * grid))
    lo, hi = math.log(MASK_ASPECT), math.log(1 / MASK_ASPECT)
    while (left := n_masked - int(mask.sum())) > 0:
        budget = min(left, most)
        added = 0
        for _ in range(10):
            lo_area, hi_area = sorted((MASK_MIN_PATCHES, budget))  # a budget under 4: areas in (budget, 4)
            area = rng.uniform(lo_area, hi_area)
            aspect = math.exp(rng.uniform(lo, hi))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < h < grid and 0 < w < grid):
                continue
            y, x = int(rng.integers(0, grid - h + 1)), int(rng.integers(0, grid - w + 1))
            new = h * w - int(mask[y : y + h, x : x + w].sum())
            if 0 < new <= budget:
                mask[y : y + h, x : x + w] = True
                added = new
                break
        if added == 0:
            break
    return mask


def random_resized_crop(
    rng: np.random.Generator, image: np.ndarray, size: int, scale: tuple[float, float]
) -> np.ndarray:
    """A crop of `scale` x the area and aspect in ASPECT (10 tries, then the central largest square),
    resized to size x size (bicubic), flipped left-right with probability 0.5."""
    import cv2

    h, w = image.shape[:2]
    box = None
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
            break
    if box is None:
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side, side)
    y, x, ch, cw = box
    crop = cv2.resize(image[y : y + ch, x : x + cw], (size, size), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def colour(rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
    """Colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with probability 0.8, then
    greyscale with probability 0.2."""
    import cv2

    x = rgb.astype(np.float32)
    if rng.random() < 0.8:
        x *= rng.uniform(0.6, 1.4)
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey.mean()) * rng.uniform(0.6, 1.4) + grey.mean()
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * rng.uniform(0.8, 1.2) + grey
        hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        shift = int(round(rng.uniform(-0.1, 0.1) * 180))  # OpenCV's hue runs over 0..179
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        out = np.repeat(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return out


def blur(rng: np.random.Generator, rgb: np.ndarray, p: float) -> np.ndarray:
    """Gaussian blur (9x9 kernel, sigma U(0.1, 2)) with probability p."""
    import cv2

    if rng.random() >= p:
        return rgb
    return cv2.GaussianBlur(rgb, (9, 9), sigmaX=float(rng.uniform(*BLUR_SIGMA)))


def solarise(rng: np.random.Generator, rgb: np.ndarray, p: float) -> np.ndarray:
    """Values at or above 128 inverted, with probability p."""
    if rng.random() >= p:
        return rgb
    return np.where(rgb >= 128, 255 - rgb, rgb).astype(np.uint8)


def views(rng: np.random.Generator, image: np.ndarray, c: CropSettings) -> dict[str, np.ndarray]:
    """The multi-crop views of one (H, W, 3) uint8 RGB image.

    Returns:
        "global": (2, G, G, 3) uint8; "local": (n_local, l, l, 3) uint8; "masks": (2, g*g) bool.
    """
    g1 = blur(rng, colour(rng, random_resized_crop(rng, image, c.global_size, c.global_scale)), 1.0)
    g2 = random_resized_crop(rng, image, c.global_size, c.global_scale)
    g2 = solarise(rng, blur(rng, colour(rng, g2), 0.1), 0.2)
    local = [
        blur(rng, colour(rng, random_resized_crop(rng, image, c.local_size, c.local_scale)), 0.5)
        for _ in range(c.n_local)
    ]
    n = c.grid * c.grid
    masks = []
    for _ in range(2):
        if rng.random() < c.mask_probability:
            masks.append(block_mask(rng, c.grid, int(n * rng.uniform(*c.mask_ratio))).ravel())
        else:
            masks.append(np.zeros(n, bool))
    shape = (0, c.local_size, c.local_size, 3)
    return {
        "global": np.stack([g1, g2]),
        "local": np.stack(local) if local else np.zeros(shape, np.uint8),
        "masks": np.stack(masks),
    }


def folder_images(folder: Path) -> list[Path]:
    """The image files under `folder` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; ValueError when OpenCV cannot read it."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class MultiCropImages(torch.utils.data.Dataset):
    """Items of multi-crop views: the left images of `sample_ids` of a dataset, then `files`.

    Args:
        dataset: a dataset folder (read lazily; pickles into DataLoader workers without its open store).
        sample_ids: ids of this split, in the dataset's order (rejected ones already left out).
        files: more image files (a folder of captures).
        crops: the recipe.
        train: fresh views every epoch; otherwise one fixed draw per image.
        seed: of every draw.

    Item: "global" (2, 3, G, G) uint8, "local" (n_local, 3, l, l) uint8, "masks" (2, g*g) bool, "row" ().
    """

    def __init__(
        self,
        dataset: Path,
        sample_ids: Sequence[str],
        files: Sequence[Path] = (),
        *,
        crops: CropSettings,
        train: bool,
        seed: int,
    ) -> None:
        from labeler import open_dataset

        reader = open_dataset(dataset)
        where = {s: i for i, s in enumerate(reader.sample_ids)}
        self.reader = reader
        self.rows = [where[s] for s in sample_ids]
        self.sample_ids = [*sample_ids, *(str(f) for f in files)]
        self.files = list(files)
        self.crops, self.train, self.seed = crops, train, seed

    def __len__(self) -> int:
        return len(self.rows) + len(self.files)

    def image(self, i: int) -> np.ndarray:
        if i < len(self.rows):
            return self.reader.read(self.rows[i], ("left",))["left"]
        return read_image(self.files[i - len(self.rows)])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch if self.train else HELDOUT_EPOCH, i])
        v = views(rng, self.image(i), self.crops)
        return {
            "global": torch.from_numpy(np.ascontiguousarray(v["global"].transpose(0, 3, 1, 2))),
            "local": torch.from_numpy(np.ascontiguousarray(v["local"].transpose(0, 3, 1, 2))),
            "masks": torch.from_numpy(v["masks"]),
            "row": torch.tensor(i),
        }
