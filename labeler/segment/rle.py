"""COCO run-length encoding of masks (pycocotools, the format COCO tools read)."""

from __future__ import annotations

import numpy as np

from data_schema.manifest import CocoRle


def encode(mask: np.ndarray) -> CocoRle:
    """(H, W) bool -> COCO RLE with a compressed `counts` string."""
    from pycocotools import mask as mask_utils

    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return CocoRle(size=[int(s) for s in rle["size"]], counts=rle["counts"].decode("ascii"))


def decode(rle: CocoRle) -> np.ndarray:
    """COCO RLE -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": list(rle.size), "counts": rle.counts.encode("ascii")}).astype(bool)
