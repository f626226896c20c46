"""Synthetic cameras and stereo rigs: distorted like a real module, or ideal and rectified.

World frame = the left camera frame (metres, x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from a Rodrigues vector (radians)."""
    import cv2

    return cv2.Rodrigues(np.array([rx, ry, rz], dtype=np.float64))[0]


@dataclass(frozen=True)
class Camera:
    """A distorted pinhole camera. X_cam = R · X_world + t."""

    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]  # (width, height)

    def rays(self, supersample: int) -> tuple[np.ndarray, np.ndarray]:
        """World-frame ray origin (3,) and directions (H*s, W*s, 3), scaled so the camera z of each is 1.

        Sample k of a pixel sits at offset (k + 0.5)/s - 0.5 from its centre.
        """
        import cv2

        w, h = self.size
        s = supersample
        offs = (np.arange(s) + 0.5) / s - 0.5
        u = (np.arange(w)[:, None] + offs[None, :]).reshape(-1)
        v = (np.arange(h)[:, None] + offs[None, :]).reshape(-1)
        uu, vv = np.meshgrid(u, v)
        pts = np.stack([uu, vv], -1).reshape(-1, 1, 2)
        # The iterative undistortion converges to well under 1e-3 px for moderate distortion.
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
        eye = np.eye(3)  # R = P = identity: normalised coordinates out
        xy = cv2.undistortPointsIter(pts, self.K, self.dist, eye, eye, crit).reshape(h * s, w * s, 2)
        d_cam = np.concatenate([xy, np.ones((h * s, w * s, 1))], axis=-1)
        d_world = d_cam @ self.R  # R^T · d for each row vector
        origin = -self.R.T @ self.t
        return origin, d_world

    def project(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) distorted pixel coordinates."""
        import cv2

        rvec = cv2.Rodrigues(self.R)[0]
        px, _ = cv2.projectPoints(points_world.reshape(-1, 1, 3), rvec, self.t, self.K, self.dist)
        return px.reshape(-1, 2)


@dataclass(frozen=True)
class SyntheticRig:
    """Two cameras with distortion and a small rotation between them; the truth calibration tests use."""

    left: Camera
    right: Camera

    @classmethod
    def arducam_like(cls, width: int = 640, height: int = 480, baseline_m: float = 0.06) -> SyntheticRig:
        """A rig shaped like an Arducam stereo module: two wide lenses ~6 cm apart, each slightly off."""
        f = 0.78 * width
        k_left = np.array([[f, 0, width / 2 - 3.5], [0, f * 1.002, height / 2 + 2.0], [0, 0, 1]])
        k_right = np.array([[f * 1.004, 0, width / 2 + 4.0], [0, f * 1.006, height / 2 - 1.5], [0, 0, 1]])
        d_left = np.array([-0.12, 0.035, 4e-4, -3e-4, 0.0])
        d_right = np.array([-0.11, 0.03, -2e-4, 5e-4, 0.0])
        r = rotation(0.006, -0.012, 0.004)  # left -> right: a fraction of a degree on each axis
        centre_right = np.array([baseline_m, 0.0008, -0.0005])  # not perfectly aligned either
        t = -r @ centre_right
        size = (width, height)
        return cls(
            left=Camera(k_left, d_left, np.eye(3), np.zeros(3), size),
            right=Camera(k_right, d_right, r, t, size),
        )

    @classmethod
    def rectified(
        cls, width: int, height: int, *, focal_px: float = 300.0, baseline_m: float = 0.1
    ) -> SyntheticRig:
        """An ideal rectified rig: two identical undistorted pinholes, the right one `baseline_m` along +x.

        A surface at depth z is seen at disparity focal_px · baseline_m / z. The defaults are those of the
        identity calibration the tests pair with such images (fx = 300 px, principal point at the centre).
        """
        k = np.array([[focal_px, 0, width / 2], [0, focal_px, height / 2], [0, 0, 1]], np.float64)
        size = (width, height)
        return cls(
            left=Camera(k, np.zeros(5), np.eye(3), np.zeros(3), size),
            right=Camera(k, np.zeros(5), np.eye(3), np.array([-baseline_m, 0.0, 0.0]), size),
        )

    @property
    def is_rectified(self) -> bool:
        """Identical undistorted cameras, the right one offset along x only: disparity = f · B / z."""
        left, right = self.left, self.right
        return (
            np.array_equal(left.K, right.K)
            and not left.dist.any()
            and not right.dist.any()
            and np.array_equal(left.R, np.eye(3))
            and np.array_equal(right.R, np.eye(3))
            and not left.t.any()
            and right.t[0] < 0
            and not right.t[1:].any()
            and left.K[0, 0] == left.K[1, 1]
        )

    @property
    def R(self) -> np.ndarray:
        return self.right.R

    @property
    def T(self) -> np.ndarray:
        return self.right.t

    @property
    def baseline_m(self) -> float:
        return float(np.linalg.norm(self.right.t))
