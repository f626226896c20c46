"""Conformance suites every stereo and mask backend passes (zarr's `StoreTests` pattern).

A backend's test module subclasses the suite and provides a `backend` fixture::

    class TestSgbm(StereoBackendTests):
        @pytest.fixture
        def backend(self):
            return SgbmBackend()

Class attributes loosen the value checks for backends that need it (e.g. `deterministic_atol` for GPU
kernels); a backend that is slow to build (weights) caches it in a class-scoped fixture
(`@pytest.fixture(scope="class")` over a `@classmethod`). Inputs are small synthetic scenes rendered
here (96 x 128 px), so a suite runs in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import pytest

from labeler.segment.base import MASK_BACKENDS, MaskBackend, Masks
from labeler.stereo.base import STEREO_BACKENDS, Disparity, StereoBackend

# --------------------------------------------------------------------------------------------- scenes


def texture(
    h: int,
    w: int,
    *,
    seed: int,
    blur_px: float = 1.0,
    base: tuple[int, int, int] | None = None,
    amplitude: float = 110.0,
) -> np.ndarray:
    """Band-limited random colour texture, (h, w, 3) uint8; around `base` colour when given."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w, 3)).astype(np.float32), (0, 0), blur_px)
    noise = noise / (noise.std() + 1e-6)
    centre = np.full(3, 128.0, np.float32) if base is None else np.asarray(base, np.float32)
    if base is not None:  # one colour: shared luminance texture, so the hue stays the same everywhere
        noise = np.repeat(noise[..., :1], 3, axis=2)
    return np.clip(centre + amplitude * 0.5 * noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Layer:
    """A fronto-parallel surface: where it is in the left image, what it looks like, how far it is."""

    mask: np.ndarray  # (H, W) bool, in left-image coordinates
    image: np.ndarray  # (H, W, 3) uint8, in left-image coordinates
    disparity_px: float


@dataclass(frozen=True)
class Scene:
    """A rendered rectified pair with its truth."""

    left: np.ndarray  # (H, W, 3) uint8
    right: np.ndarray  # (H, W, 3) uint8
    disparity_px: np.ndarray  # (H, W) float32, of the left image
    instance_ids: np.ndarray  # (H, W) int32: 0 background, k for layers[k - 1]


def render(background: np.ndarray, background_disparity_px: float, layers: list[Layer]) -> Scene:
    """Composite fronto-parallel layers (far to near by disparity) into a left and a right view.

    A surface at disparity d seen at left x appears at right x - d; the right view samples each layer at
    x + d with bilinear interpolation, so fractional disparities are exact up to interpolation.
    """
    h, w = background.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def warp(img: np.ndarray, d: float, interp: int) -> np.ndarray:
        return cv2.remap(img, xs + np.float32(d), ys, interp, borderMode=cv2.BORDER_REFLECT)

    left = background.copy()
    right = warp(background, background_disparity_px, cv2.INTER_LINEAR)
    disp = np.full((h, w), background_disparity_px, np.float32)
    ids = np.zeros((h, w), np.int32)
    order = sorted(range(len(layers)), key=lambda k: layers[k].disparity_px)
    for k in order:
        layer = layers[k]
        left[layer.mask] = layer.image[layer.mask]
        disp[layer.mask] = layer.disparity_px
        ids[layer.mask] = k + 1
        on_right = warp(layer.mask.astype(np.float32), layer.disparity_px, cv2.INTER_LINEAR) > 0.5
        right[on_right] = warp(layer.image, layer.disparity_px, cv2.INTER_LINEAR)[on_right]
    return Scene(left=left, right=right, disparity_px=disp, instance_ids=ids)


def disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """(h, w) bool disc."""
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def plane_pair(h: int = 96, w: int = 128, *, disparity_px: float = 6.5, seed: int = 0) -> Scene:
    """One textured fronto-parallel plane at a known (fractional) disparity."""
    return render(texture(h, w, seed=seed), disparity_px, [])


def square_scene(h: int = 96, w: int = 128, *, seed: int = 0) -> Scene:
    """A textured square at disparity 14 px in front of a textured plane at 5 px."""
    mask = np.zeros((h, w), bool)
    mask[h // 4 : 3 * h // 4, w // 3 : 3 * w // 4] = True
    return render(texture(h, w, seed=seed), 5.0, [Layer(mask, texture(h, w, seed=seed + 1), 14.0)])


def object_scene(h: int = 96, w: int = 128, *, seed: int = 0) -> Scene:
    """A plain-coloured, lightly textured disc in front of a colourful textured background."""
    obj = texture(h, w, seed=seed + 1, base=(40, 90, 220), amplitude=30.0)
    return render(
        texture(h, w, seed=seed, blur_px=1.5),
        4.0,
        [Layer(disc(h, w, 0.55 * w, 0.5 * h, 0.28 * h), obj, 12.0)],
    )


# --------------------------------------------------------------------------------------------- stereo


class StereoBackendTests:
    """Every stereo backend: contract (shapes, dtypes, NaN and confidence), errors, determinism, values."""

    plane_max_median_error_px: ClassVar[float] = 0.25
    plane_min_density: ClassVar[float] = 0.8  # share of pixels with a disparity on the plane scene
    region_max_median_error_px: ClassVar[float] = 0.5
    deterministic_atol: ClassVar[float] = 0.0

    @pytest.fixture
    def backend(self) -> StereoBackend:
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture with the backend under test")

    @pytest.fixture
    def plane(self) -> Scene:
        return plane_pair()

    @pytest.fixture
    def square(self) -> Scene:
        return square_scene()

    def test_registered(self, backend: StereoBackend) -> None:
        assert STEREO_BACKENDS.get(type(backend).name) is type(backend)

    def test_shapes_and_dtypes(self, backend: StereoBackend, plane: Scene) -> None:
        out = backend.disparity(plane.left, plane.right)
        assert isinstance(out, Disparity)
        assert out.disparity_px.shape == plane.left.shape[:2] and out.disparity_px.dtype == np.float32
        assert out.confidence.shape == plane.left.shape[:2] and out.confidence.dtype == np.float32

    def test_nan_exactly_where_confidence_nan(self, backend: StereoBackend, square: Scene) -> None:
        out = backend.disparity(square.left, square.right)
        d, c = out.disparity_px, out.confidence
        np.testing.assert_array_equal(np.isnan(d), np.isnan(c))
        assert not np.isinf(d).any() and not np.isinf(c).any()
        finite = c[np.isfinite(c)]
        assert finite.size and finite.min() >= 0.0 and finite.max() <= 1.0

    def test_mismatched_sizes_raise(self, backend: StereoBackend, plane: Scene) -> None:
        with pytest.raises(ValueError, match="differ in size"):
            backend.disparity(plane.left, plane.right[:, :-8])

    def test_bad_dtype_or_layout_raises(self, backend: StereoBackend, plane: Scene) -> None:
        with pytest.raises(ValueError, match="uint8"):
            backend.disparity(plane.left.astype(np.float32), plane.right.astype(np.float32))
        with pytest.raises(ValueError, match="uint8"):
            backend.disparity(plane.left[..., 0], plane.right[..., 0])

    def test_deterministic(self, backend: StereoBackend, square: Scene) -> None:
        a = backend.disparity(square.left, square.right)
        b = backend.disparity(square.left, square.right)
        np.testing.assert_allclose(a.disparity_px, b.disparity_px, atol=self.deterministic_atol, rtol=0)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=self.deterministic_atol, rtol=0)

    def test_fronto_parallel_plane(self, backend: StereoBackend, plane: Scene) -> None:
        d = backend.disparity(plane.left, plane.right).disparity_px
        valid = np.isfinite(d)
        assert valid.mean() >= self.plane_min_density
        err = np.abs(d[valid] - plane.disparity_px[valid])
        assert np.median(err) <= self.plane_max_median_error_px

    def test_square_in_front_of_plane(self, backend: StereoBackend, square: Scene) -> None:
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

    object_min_iou: ClassVar[float] = 0.7

    @pytest.fixture
    def backend(self) -> MaskBackend:
        pytest.fail(f"{type(self).__name__} must override the `backend` fixture with the backend under test")

    @pytest.fixture
    def scene(self) -> Scene:
        return object_scene()

    def test_registered(self, backend: MaskBackend) -> None:
        assert MASK_BACKENDS.get(type(backend).name) is type(backend)

    def test_contract(self, backend: MaskBackend, scene: Scene) -> None:
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

    def test_without_disparity(self, backend: MaskBackend, scene: Scene) -> None:
        out = backend.masks(scene.left)
        assert out.masks.shape[1:] == scene.left.shape[:2]

    def test_bad_image_raises(self, backend: MaskBackend, scene: Scene) -> None:
        with pytest.raises(ValueError, match="uint8"):
            backend.masks(scene.left.astype(np.float32))
        with pytest.raises(ValueError, match="uint8"):
            backend.masks(scene.left[..., 0])

    def test_deterministic(self, backend: MaskBackend, scene: Scene) -> None:
        a = backend.masks(scene.left, disparity_px=scene.disparity_px)
        b = backend.masks(scene.left, disparity_px=scene.disparity_px)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.scores, b.scores)

    def test_finds_the_object(self, backend: MaskBackend, scene: Scene) -> None:
        out = backend.masks(scene.left, disparity_px=scene.disparity_px)
        assert best_iou(out.masks, scene.instance_ids == 1) >= self.object_min_iou
