"""The stereo backend interface: a rectified pair in, disparity in pixels out."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labeler.registry import Backend, C, Registry


@dataclass(frozen=True)
class Disparity:
    """Disparity of the left image.

    Attributes:
        disparity_px: (H, W) float32, left-image x minus matching right-image x, in pixels;
            NaN where no valid match (occlusion, failed consistency check, outside the right image).
        confidence: (H, W) float32 in [0, 1]; NaN exactly where `disparity_px` is NaN.
    """

    disparity_px: np.ndarray
    confidence: np.ndarray
    # how this pair was made, where a backend varies it (recorded per sample in the samples table)
    scale: float | None = None  # image scale the network ran at (FoundationStereo lowers it after OOM)
    iters: int | None = None  # refinement iterations
    dtype: str | None = None  # compute dtype (float32, or the autocast dtype on CUDA)

    def __post_init__(self) -> None:
        d, c = self.disparity_px, self.confidence
        if d.ndim != 2 or d.dtype != np.float32:
            raise ValueError(f"disparity_px must be (H, W) float32, got {d.shape} {d.dtype}")
        if c.shape != d.shape or c.dtype != np.float32:
            raise ValueError(f"confidence must be {d.shape} float32, got {c.shape} {c.dtype}")


class StereoBackend(Backend[C]):
    """A stereo matcher. Subclasses set `config_type` (and `uses_cuda = False` when CPU-only), take their
    config in `__init__`, implement `disparity`; `STEREO_BACKENDS.create(config, device=...)` builds one.

    Heavy imports (torch, model code) belong inside the subclass methods, never at module import.
    """

    @abstractmethod
    def __init__(self, config: C, *, device: str) -> None:
        """Build from the backend's own config (`SgbmConfig`, ...); `device` is "cpu" or "cuda:<id>"."""

    @abstractmethod
    def disparity(self, left: np.ndarray, right: np.ndarray) -> Disparity:
        """Match a rectified pair.

        Args:
            left: (H, W, 3) uint8 RGB, rectified.
            right: (H, W, 3) uint8 RGB, rectified, same size.
        """

    def disparity_many(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Disparity]:
        """Match several pairs; model backends override this to share forward passes (GPU batching)."""
        return [self.disparity(left, right) for left, right in pairs]


def check_pair(left: np.ndarray, right: np.ndarray) -> None:
    """Raise one clear ValueError when a pair cannot be matched."""
    for side, img in (("left", left), ("right", right)):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{side} image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    if left.shape != right.shape:
        raise ValueError(
            f"left and right images differ in size ({left.shape[1]}x{left.shape[0]} vs "
            f"{right.shape[1]}x{right.shape[0]}); rectify the pair with one calibration first"
        )


STEREO_BACKENDS: Registry[StereoBackend] = Registry("stereo")
