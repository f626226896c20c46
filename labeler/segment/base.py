"""The mask backend interface: an image (and optionally its disparity) in, instance masks out."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import numpy as np

from data_schema.manifest import TrackingConfig
from labeler.errors import LabelerError
from labeler.registry import Backend, C, Registry

T = TypeVar("T")


@dataclass(frozen=True)
class Masks:
    """Instance proposals for one image, sorted by descending score.

    Attributes:
        masks: (N, H, W) bool, one layer per instance; may overlap.
        scores: (N,) float32 in [0, 1], the backend's quality estimate per mask.
        stability: (N,) float32 in [0, 1] (SAM's stability score; 1 where a backend has no such notion).
        class_names: (N,) the class of each mask, from backends prompted with class names (sam3);
            None from class-agnostic backends.
        track_ids: (N,) from a backend that tracks (`track_masks`): each mask's object id, the same for
            one object over the frames of one call; None otherwise.
    """

    masks: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    class_names: tuple[str, ...] | None = None
    track_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        m = self.masks
        if m.ndim != 3 or m.dtype != np.bool_:
            raise ValueError(f"masks must be (N, H, W) bool, got {m.shape} {m.dtype}")
        for name in ("scores", "stability"):
            a = getattr(self, name)
            if a.shape != (m.shape[0],) or a.dtype != np.float32:
                raise ValueError(f"{name} must be ({m.shape[0]},) float32, got {a.shape} {a.dtype}")
        if self.class_names is not None and len(self.class_names) != m.shape[0]:
            raise ValueError(f"class_names must name {m.shape[0]} masks, got {len(self.class_names)}")
        if self.track_ids is not None and len(self.track_ids) != m.shape[0]:
            raise ValueError(f"track_ids must give {m.shape[0]} masks an id, got {len(self.track_ids)}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])


class MaskBackend(Backend[C]):
    """An instance mask proposer. Subclasses set `config_type` (and `uses_cuda = False` when CPU-only), take
    their config in `__init__`, implement `masks`; `MASK_BACKENDS.create(config, device=...)` builds one.

    Heavy imports (torch, sam2) belong inside the subclass methods, never at module import.
    """

    @abstractmethod
    def __init__(self, config: C, *, device: str) -> None:
        """Build from the backend's own config (`Sam2Config`, ...); `device` is "cpu" or "cuda:<id>"."""

    @abstractmethod
    def masks(self, image: np.ndarray, *, disparity_px: np.ndarray | None = None) -> Masks:
        """Propose instances.

        Args:
            image: (H, W, 3) uint8 RGB (the rectified left image).
            disparity_px: optional (H, W) float32 disparity of that image, NaN invalid; backends that use
                depth cues (classical) take it, others ignore it.
        """

    def masks_many(
        self, images: Sequence[np.ndarray], *, disparities_px: Sequence[np.ndarray | None] | None = None
    ) -> list[Masks]:
        """Masks of several images; model backends override this to batch their encoder (GPU)."""
        disparities = disparities_px if disparities_px is not None else [None] * len(images)
        return [self.masks(img, disparity_px=d) for img, d in zip(images, disparities, strict=True)]

    # A backend whose config `tracks_itself()` under --track (sam2's video predictor; sam3's video model on
    # CUDA) implements `track_masks`; the others' objects are linked by association after labelling
    # (segment/track.py).
    def track_masks(
        self, frames: Sequence[np.ndarray], *, tracking: TrackingConfig, min_area_px: int = 1
    ) -> list[Masks]:
        """Masks of a sequence chunk's frames (in frame order), each carrying `track_ids` that name one
        object over the frames of this call."""
        raise NotImplementedError(f"{type(self).__name__} does not track objects itself")


class LoadsOnFirstUse:
    """For model backends: the model loads on first use in each process and never travels in a pickle
    (a Dask worker loads its own); a failed load (wrong weights: a LabelerError) is kept and raised again
    at once for every later image instead of reloading. A backend with a second model (sam3's video
    model) names it by a `slot`: its own `_<slot>state` / `_<slot>error` attributes, listed in `_slots`."""

    _state: Any = None
    _error: LabelerError | None = None
    _slots: ClassVar[tuple[str, ...]] = ("",)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for slot in self._slots:
            state[f"_{slot}state"] = state[f"_{slot}error"] = None
        return state

    def _load_once(self, load: Callable[[], T], slot: str = "") -> T:
        loaded, failed = f"_{slot}state", f"_{slot}error"
        if getattr(self, loaded) is None:
            error = getattr(self, failed)
            if error is not None:
                raise error
            try:
                setattr(self, loaded, load())
            except LabelerError as err:
                setattr(self, failed, err)
                raise
        return cast(T, getattr(self, loaded))


def check_images(
    images: Sequence[np.ndarray], disparities_px: Sequence[np.ndarray | None] | None = None
) -> None:
    """`check_image` for every image of a batch (and its disparity, where given)."""
    disparities = disparities_px if disparities_px is not None else [None] * len(images)
    for image, disparity_px in zip(images, disparities, strict=True):
        check_image(image, disparity_px)


def check_image(image: np.ndarray, disparity_px: np.ndarray | None = None) -> None:
    """Raise one clear ValueError when an image (and its optional disparity) cannot be segmented."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if disparity_px is not None and disparity_px.shape != image.shape[:2]:
        raise ValueError(f"disparity_px must be {image.shape[:2]}, got {disparity_px.shape}")


MASK_BACKENDS: Registry[MaskBackend] = Registry("mask")
