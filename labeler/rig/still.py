"""Still frames: a frame of a sequence nearly identical to the last frame labelled before it.

The test, on the left eye as captured (before rectification):
1. both frames are turned grey and shrunk to THUMB_WIDTH_PX wide by area averaging (cv2.INTER_AREA), which
   averages sensor noise away (10x smaller: the noise's standard deviation about 10x smaller);
2. the frame is still when the STILL_QUANTILE quantile of the absolute grey difference of the two thumbnails
   is at most `threshold_dn` (grey levels, 0-255). A quantile rather than the mean: an object that moves
   over a small part of the view changes few thumbnail pixels a lot, and must not be averaged away.

A still frame is recorded as skipped (`duplicate of <id>`) and costs no model time; `--keep-duplicates`
turns the test off. A frame is compared with the last *kept* frame, so a slow drift still gets labelled
once it adds up to the threshold.
"""

from __future__ import annotations

import numpy as np

THUMB_WIDTH_PX = 64
STILL_QUANTILE = 0.99
DEFAULT_THRESHOLD_DN = 3.0


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, THUMB_WIDTH_PX) float32 grey, area-averaged."""
    import cv2

    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    size = (min(THUMB_WIDTH_PX, w), max(1, round(h * min(THUMB_WIDTH_PX, w) / w)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def still_difference_dn(a: np.ndarray, b: np.ndarray) -> float:
    """The STILL_QUANTILE quantile of |a - b| over two thumbnails of one size, grey levels."""
    if a.shape != b.shape:
        return float("inf")  # another size is never the same view
    return float(np.quantile(np.abs(a - b), STILL_QUANTILE))


class StillFilter:
    """Tells, frame by frame of one sequence in order, which frames repeat the last kept one."""

    def __init__(self, threshold_dn: float = DEFAULT_THRESHOLD_DN) -> None:
        if not 0 <= threshold_dn <= 255:
            raise ValueError(f"still threshold {threshold_dn} must be within 0..255 grey levels")
        self.threshold_dn = threshold_dn
        self._last: tuple[str, np.ndarray] | None = None

    def duplicate_of(self, pair_id: str, left: np.ndarray) -> str | None:
        """The id of the kept frame this one repeats (it is then skipped), or None (it becomes the kept)."""
        thumb = thumbnail(left)
        if self._last is not None and still_difference_dn(self._last[1], thumb) <= self.threshold_dn:
            return self._last[0]
        self._last = (pair_id, thumb)
        return None
