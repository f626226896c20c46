"""Ray-cast scenes of textured planar patches; rectified pairs with their disparity, depth and ids."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from labeler.synthetic._rig import Camera, SyntheticRig


@dataclass(frozen=True)
class TexturedRect:
    """A planar rectangle: X = origin + a·u + b·v for a in [a_min, a_max], b in [b_min, b_max] (metres),
    u and v orthonormal.

    The texture is an image covering that extent (row = b, column = a); `instance_id` 0 is background.
    `mask` ((Ht, Wt) bool over the texture), when given, cuts a shape out of the rectangle (a disc, say):
    rays hit only where its bilinear value exceeds 0.5. `bounded=False` makes the patch an endless plane
    whose texture continues mirrored beyond the extent, a background that fills any view.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    extent: tuple[float, float, float, float]  # a_min, a_max, b_min, b_max
    texture: np.ndarray  # (Ht, Wt, 3) uint8 RGB
    instance_id: int = 0
    mask: np.ndarray | None = None
    bounded: bool = True

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray parameter t (inf where missed) and plane coordinates (a, b) for each ray."""
        n = np.cross(self.u, self.v)
        # one (rays, 3) @ (3, 3) product instead of building the (rays, 3) hit points: the hit's plane
        # coordinates are (origin - self.origin)·u + t·(dir·u), likewise for v
        # (3, rays) rows, each contiguous: the elementwise work below runs on unstrided arrays
        dn, du, dv = (np.stack([n, self.u, self.v]) @ dirs.reshape(-1, 3).T).reshape((3, *dirs.shape[:-1]))
        rel = origin - self.origin
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -(rel @ n) / dn
            a = rel @ self.u + t * du
            b = rel @ self.v + t * dv
        ok = t > 0
        if self.bounded:
            a0, a1, b0, b1 = self.extent
            ok &= (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        if self.mask is not None:
            ok &= self._sample(self.mask.astype(np.float32), a, b) > 0.5
        return np.where(ok, t, np.inf), a, b

    def colour(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._sample(self.texture, a, b)

    def _sample(self, image: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Bilinear samples of a texture-sized image at plane coordinates (a, b)."""
        import cv2

        a0, a1, b0, b1 = self.extent
        ht, wt = self.texture.shape[:2]
        x = (a - a0) / (a1 - a0) * wt - 0.5
        y = (b - b0) / (b1 - b0) * ht - 0.5
        if not self.bounded:
            x, y = _mirror(x, wt), _mirror(y, ht)
        # within half a pixel of the edge, replicate equals the mirrored continuation
        return cv2.remap(
            image,
            x.astype(np.float32),
            y.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Texture coordinates (pixel centres at 0 .. n-1) folded into [-0.5, n - 0.5] by mirroring at the
    edges (OpenCV's BORDER_REFLECT, continued); rays that miss the plane (NaN, inf) go to 0."""
    y = np.mod(np.where(np.isfinite(x), x, 0.0) + 0.5, 2 * n)
    return np.where(y > n, 2 * n - y, y) - 0.5


@dataclass(frozen=True)
class Rendering:
    """One camera's view: image (H, W, 3) uint8, depth_m (H, W) float32 camera z (inf: nothing hit),
    instance_ids (H, W) int32 (0 = background)."""

    image: np.ndarray
    depth_m: np.ndarray
    instance_ids: np.ndarray


@dataclass
class Scene:
    """Textured planar patches; the nearest one along a ray is what a camera sees."""

    rects: list[TexturedRect] = field(default_factory=list)

    def render(
        self,
        camera: Camera,
        *,
        supersample: int = 3,
        noise_dn: float = 0.0,
        rng: np.random.Generator | None = None,
        rays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Rendering:
        """Ray-cast the scene; colours are averaged over s×s samples, depth and ids from the centre one.

        Args:
            camera: the viewing camera.
            supersample: s, samples per pixel side.
            noise_dn: standard deviation of Gaussian noise added to the image (digital numbers).
            rng: the noise's generator (default: seed 0).
            rays: `camera.rays(supersample)`, when the caller renders several scenes with one camera.
        """
        return self.render_views([(camera, rays)], supersample=supersample, noise_dn=noise_dn, rng=rng)[0]

    def render_views(
        self,
        views: Sequence[tuple[Camera, tuple[np.ndarray, np.ndarray] | None]],
        *,
        supersample: int = 3,
        noise_dn: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> list[Rendering]:
        """`render` of several (camera, rays) views, traced in parallel threads (numpy and OpenCV release
        the GIL); the noise is drawn afterwards in view order from `rng` (default: seed 0 for each
        view), so the images equal one `render` per view."""
        s = supersample
        if len(views) == 1:
            traced = [self._trace(views[0][0], s, views[0][1])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(views), os.cpu_count() or 1)) as pool:
                traced = list(pool.map(lambda view: self._trace(view[0], s, view[1]), views))
        return [
            Rendering(
                image=_to_uint8(image, noise_dn, rng),
                depth_m=depth_m.astype(np.float32),
                instance_ids=ids,
            )
            for image, depth_m, ids in traced
        ]

    def _trace(
        self,
        camera: Camera,
        supersample: int,
        rays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(float image before rounding, float64 camera z of the centre samples, instance ids) of one view."""
        origin, dirs = rays if rays is not None else camera.rays(supersample)
        s = supersample
        best_t = np.full(dirs.shape[:2], np.inf)
        rgb = np.zeros(dirs.shape[:2] + (3,), np.float32)
        ids = np.zeros(dirs.shape[:2], np.int32)
        for rect in self.rects:
            t, a, b = rect.intersect(origin, dirs)
            closer = t < best_t
            if not closer.any():
                continue
            # copyto with a mask writes in place; boolean indexing would gather and scatter copies
            np.copyto(best_t, t, where=closer)
            # colour only the rows and columns this patch is seen in (remap is per pixel: same values)
            rows, cols = np.flatnonzero(closer.any(axis=1)), np.flatnonzero(closer.any(axis=0))
            win = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            np.copyto(rgb[win], rect.colour(a[win], b[win]), where=closer[win][..., None])
            ids[closer] = rect.instance_id
        h, w = dirs.shape[0] // s, dirs.shape[1] // s
        image = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        c = s // 2  # the centre sample when s is odd; the nearest one otherwise
        # camera z = t because every direction has camera-frame z = 1
        return image, best_t.reshape(h, s, w, s)[:, c, :, c], ids.reshape(h, s, w, s)[:, c, :, c].copy()


def _to_uint8(image: np.ndarray, noise_dn: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """A traced float image with Gaussian noise of `noise_dn` (from `rng`), rounded to uint8."""
    if noise_dn > 0:
        image = image + (rng or np.random.default_rng(0)).normal(0, noise_dn, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class RectifiedPair:
    """A rendered rectified pair with its truth, all in left-image coordinates.

    Attributes:
        left, right: (H, W, 3) uint8 RGB.
        disparity_px: (H, W) float32, focal_px · baseline_m / depth; 0 where nothing is hit (infinitely far).
        depth_m: (H, W) float32 camera z; inf where nothing is hit.
        instance_ids: (H, W) int32, the `instance_id` of the patch seen (0 = background).
    """

    left: np.ndarray
    right: np.ndarray
    disparity_px: np.ndarray
    depth_m: np.ndarray
    instance_ids: np.ndarray


def fronto_parallel(
    rig: SyntheticRig,
    texture: np.ndarray,
    disparity_px: float,
    *,
    top_left_px: tuple[int, int] = (0, 0),
    mask: np.ndarray | None = None,
    instance_id: int = 0,
    bounded: bool = True,
) -> TexturedRect:
    """A patch facing a rectified rig at the depth of `disparity_px`, its texture seen pixel for pixel.

    Texture pixel (row i, column j) is seen by the left camera at pixel (x, y) = top_left_px + (j, i), so
    the left view shows the texture unresampled and the right view shows it shifted by the disparity.

    Args:
        rig: a rectified rig (`SyntheticRig.rectified`).
        texture: (Ht, Wt, 3) uint8 RGB.
        disparity_px: > 0; the patch lies at depth focal_px · baseline_m / disparity_px.
        top_left_px: (x, y) left-image pixel of texture pixel (0, 0).
        mask, instance_id, bounded: as `TexturedRect`'s.
    """
    if not rig.is_rectified:
        raise ValueError("fronto_parallel needs a rectified rig (SyntheticRig.rectified)")
    if disparity_px <= 0:
        raise ValueError(f"disparity_px must be > 0, got {disparity_px}")
    k = rig.left.K
    f, cx, cy = float(k[0, 0]), float(k[0, 2]), float(k[1, 2])
    z = f * rig.baseline_m / disparity_px
    x0, y0 = top_left_px
    ht, wt = texture.shape[:2]
    # the corner of texture pixel (0, 0) is half a pixel up and left of its centre
    origin = np.array([z * (x0 - 0.5 - cx) / f, z * (y0 - 0.5 - cy) / f, z])
    return TexturedRect(
        origin=origin,
        u=np.array([1.0, 0.0, 0.0]),
        v=np.array([0.0, 1.0, 0.0]),
        extent=(0.0, wt * z / f, 0.0, ht * z / f),
        texture=texture,
        instance_id=instance_id,
        mask=mask,
        bounded=bounded,
    )


def render_pair(rig: SyntheticRig, scene: Scene, *, supersample: int = 1) -> RectifiedPair:
    """Render both views of a rectified rig, and the left view's disparity, depth and ids.

    With the default `supersample=1` every pixel is point-sampled at its centre, so patches made by
    `fronto_parallel` appear unresampled in the left view and bilinearly shifted by exactly their
    disparity in the right view.
    """
    if not rig.is_rectified:
        raise ValueError("render_pair needs a rectified rig (SyntheticRig.rectified)")
    left_f, depth_m, ids = scene._trace(rig.left, supersample)
    right_f, _, _ = scene._trace(rig.right, supersample)
    left, right = _to_uint8(left_f), _to_uint8(right_f)
    with np.errstate(divide="ignore"):
        disparity = rig.left.K[0, 0] * rig.baseline_m / depth_m  # float64 depth: exact round trip
    return RectifiedPair(
        left=left,
        right=right,
        disparity_px=disparity.astype(np.float32),
        depth_m=depth_m.astype(np.float32),
        instance_ids=ids,
    )
