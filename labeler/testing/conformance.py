"""Conformance suites every stereo and mask backend passes (zarr's `StoreTests` pattern).

A backend's test module subclasses the suite, names the backend and provides a `backend` fixture::

    class TestSgbm(StereoBackendTests):
        backend_name = "sgbm"

        @pytest.fixture
        def backend(self):
            return SgbmBackend()

`backend_name` is the registry name: `test_registered` checks the fixture builds that backend, and
`tests/test_conformance_coverage.py` checks every registered backend has a subclass. Class attributes
loosen the value checks for backends that need it (e.g. `deterministic_atol` for GPU kernels,
`many_atol` for batched forward passes); a backend that is slow to build (weights) caches it in a
class-scoped fixture
(`@pytest.fixture(scope="class")` over a `@classmethod`). Inputs are small synthetic scenes rendered
by `labeler.testing.scenes` (96 x 128 px), so a suite runs in seconds on a CPU.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import pytest

from labeler.segment.base import MASK_BACKENDS, MaskBackend, Masks
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend
from labeler.synthetic import RectifiedPair
from labeler.testing.scenes import object_scene, plane_pair, square_scene

# --------------------------------------------------------------------------------------------- stereo


class StereoBackendTests:
    """Every stereo backend: contract (shapes, dtypes, NaN and confidence), errors, determinism, values."""

    backend_name: ClassVar[str]  # the registry name of the backend under test; every subclass sets it
    plane_max_median_error_px: ClassVar[float] = 0.25
    plane_min_density: ClassVar[float] = 0.8  # share of pixels with a disparity on the plane scene
    region_max_median_error_px: ClassVar[float] = 0.5
    deterministic_atol: ClassVar[float] = 0.0
    many_atol: ClassVar[float] = 0.0  # disparity_many vs one pair at a time (0: bit for bit)

    @pytest.fixture
    def backend(self) -> StereoBackend:
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture with the backend under test")

    @pytest.fixture
    def plane(self) -> RectifiedPair:
        return plane_pair()

    @pytest.fixture
    def square(self) -> RectifiedPair:
        return square_scene()

    def test_registered(self, backend: StereoBackend) -> None:
        name = _backend_name(type(self))
        assert type(backend).name == name and STEREO_BACKENDS.get(name) is type(backend)

    def test_shapes_and_dtypes(self, backend: StereoBackend, plane: RectifiedPair) -> None:
        out = backend.disparity(plane.left, plane.right)
        assert isinstance(out, Disparity)
        assert out.disparity_px.shape == plane.left.shape[:2] and out.disparity_px.dtype == np.float32
        assert out.confidence.shape == plane.left.shape[:2] and out.confidence.dtype == np.float32

    def test_nan_exactly_where_confidence_nan(self, backend: StereoBackend, square: RectifiedPair) -> None:
        out = backend.disparity(square.left, square.right)
        d, c = out.disparity_px, out.confidence
        np.testing.assert_array_equal(np.isnan(d), np.isnan(c))
        assert not np.isinf(d).any() and not np.isinf(c).any()
        finite = c[np.isfinite(c)]
        assert finite.size and finite.min() >= 0.0 and finite.max() <= 1.0

    def test_mismatched_sizes_raise(self, backend: StereoBackend, plane: RectifiedPair) -> None:
        with pytest.raises(ValueError, match="differ in size"):
            backend.disparity(plane.left, plane.right[:, :-8])

    def test_bad_dtype_or_layout_raises(self, backend: StereoBackend, plane: RectifiedPair) -> None:
        with pytest.raises(ValueError, match="uint8"):
            backend.disparity(plane.left.astype(np.float32), plane.right.astype(np.float32))
        with pytest.raises(ValueError, match="uint8"):
            backend.disparity(plane.left[..., 0], plane.right[..., 0])

    def test_deterministic(self, backend: StereoBackend, square: RectifiedPair) -> None:
        a = backend.disparity(square.left, square.right)
        b = backend.disparity(square.left, square.right)
        np.testing.assert_allclose(a.disparity_px, b.disparity_px, atol=self.deterministic_atol, rtol=0)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=self.deterministic_atol, rtol=0)

    def test_many_equals_one_at_a_time(self, backend: StereoBackend) -> None:
        """disparity_many gives each pair what disparity gives it, in order, sizes mixed (NaN included).

        Small pairs (two of one size, one of another), so a model backend's five forward passes are quick.
        """
        scenes = (
            square_scene(32, 64, seed=1),
            plane_pair(32, 48, disparity_px=5.25, seed=3),
            plane_pair(32, 64, disparity_px=6.5, seed=4),
        )
        pairs = [(s.left, s.right) for s in scenes]
        many = backend.disparity_many(pairs)
        assert len(many) == len(pairs)
        for (left, right), got in zip(pairs, many, strict=True):
            alone = backend.disparity(left, right)
            for a, b in ((got.disparity_px, alone.disparity_px), (got.confidence, alone.confidence)):
                np.testing.assert_allclose(a, b, atol=self.many_atol, rtol=0)  # NaN where NaN
        assert backend.disparity_many([]) == []

    def test_fronto_parallel_plane(self, backend: StereoBackend, plane: RectifiedPair) -> None:
        d = backend.disparity(plane.left, plane.right).disparity_px
        valid = np.isfinite(d)
        assert valid.mean() >= self.plane_min_density
        err = np.abs(d[valid] - plane.disparity_px[valid])
        assert np.median(err) <= self.plane_max_median_error_px

    def test_square_in_front_of_plane(self, backend: StereoBackend, square: RectifiedPair) -> None:
        d = backend.disparity(square.left, square.right).disparity_px
        for k in (0, 1):  # away from borders, each surface's median disparity is right
            region = cv2.erode((square.instance_ids == k).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
            region[:, :20] = False  # the left band sees the background outside the right image
            got = d[region & np.isfinite(d)]
            assert got.size > 0.5 * region.sum()
            want = float(square.disparity_px[region][0])
            assert abs(float(np.median(got)) - want) <= self.region_max_median_error_px


# --------------------------------------------------------------------------------------------- masks


def best_iou(masks: np.ndarray, target: np.ndarray) -> float:
    """Largest IoU of any (N, H, W) mask with the (H, W) target; 0 without masks."""
    if len(masks) == 0:
        return 0.0
    inter = (masks & target).sum(axis=(1, 2))
    union = (masks | target).sum(axis=(1, 2))
    return float((inter / np.maximum(union, 1)).max())


class MaskBackendTests:
    """Every mask backend: contract (bool masks, sorted scores in [0, 1]), errors, determinism, values."""

    backend_name: ClassVar[str]  # the registry name of the backend under test; every subclass sets it
    object_min_iou: ClassVar[float] = 0.7
    many_max_mask_diff: ClassVar[float] = 0.0  # masks_many vs one image at a time: share of pixels
    many_scores_atol: ClassVar[float] = 0.0  # ... and of scores and stability (0: bit for bit)

    @pytest.fixture
    def backend(self) -> MaskBackend:
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture with the backend under test")

    @pytest.fixture
    def scene(self) -> RectifiedPair:
        return object_scene()

    def test_registered(self, backend: MaskBackend) -> None:
        name = _backend_name(type(self))
        assert type(backend).name == name and MASK_BACKENDS.get(name) is type(backend)

    def test_contract(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        out = backend.masks(scene.left, disparity_px=scene.disparity_px)
        assert isinstance(out, Masks)
        n = len(out)
        assert out.masks.shape == (n, *scene.left.shape[:2]) and out.masks.dtype == np.bool_
        assert out.scores.shape == (n,) and out.scores.dtype == np.float32
        assert out.stability.shape == (n,) and out.stability.dtype == np.float32
        assert np.all((out.scores >= 0) & (out.scores <= 1))
        assert np.all((out.stability >= 0) & (out.stability <= 1))
        assert np.all(np.diff(out.scores) <= 0), "masks must come sorted by descending score"
        assert np.all(out.masks.reshape(n, -1).any(axis=1)), "no empty masks"

    def test_without_disparity(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        out = backend.masks(scene.left)
        assert out.masks.shape[1:] == scene.left.shape[:2]

    def test_bad_image_raises(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        with pytest.raises(ValueError, match="uint8"):
            backend.masks(scene.left.astype(np.float32))
        with pytest.raises(ValueError, match="uint8"):
            backend.masks(scene.left[..., 0])

    def test_deterministic(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        a = backend.masks(scene.left, disparity_px=scene.disparity_px)
        b = backend.masks(scene.left, disparity_px=scene.disparity_px)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.scores, b.scores)

    def test_finds_the_object(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        out = backend.masks(scene.left, disparity_px=scene.disparity_px)
        assert best_iou(out.masks, scene.instance_ids == 1) >= self.object_min_iou

    def test_many_equals_one_at_a_time(self, backend: MaskBackend, scene: RectifiedPair) -> None:
        """masks_many gives each image what masks gives it, in order, sizes mixed, with and without
        disparity."""
        other, small = object_scene(seed=1), object_scene(64, 80, seed=2)
        images = [scene.left, other.left, small.left]
        disparities = [scene.disparity_px, None, small.disparity_px]
        many = backend.masks_many(images, disparities_px=disparities)
        assert len(many) == len(images)
        for image, disparity_px, got in zip(images, disparities, many, strict=True):
            alone = backend.masks(image, disparity_px=disparity_px)
            assert len(got) == len(alone) > 0
            differ = np.count_nonzero(got.masks != alone.masks)
            assert differ <= self.many_max_mask_diff * alone.masks.size
            for a, b in ((got.scores, alone.scores), (got.stability, alone.stability)):
                np.testing.assert_allclose(a, b, atol=self.many_scores_atol, rtol=0)
        assert backend.masks_many([]) == []


def _backend_name(suite: type) -> str:
    name = getattr(suite, "backend_name", None)
    assert isinstance(name, str), (
        f"{suite.__name__} must set backend_name to the registry name of the backend it tests"
    )
    return name
