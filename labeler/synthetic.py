"""A ray-casting renderer for a synthetic stereo rig with lens distortion.

Every pixel's ray comes from `cv2.undistortPoints`, so the images carry the rig's exact distortion and
the truth (intrinsics, R, T, per-pixel depth, instance ids) is known. It renders calibration boards
(chessboard, ChArUco) and simple scenes of textured planar objects; tests and `labeler demo` use it.

World frame = the left camera frame (metres, x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_schema.calibration import BoardSpec


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
        xy = cv2.undistortPointsIter(pts, self.K, self.dist, None, None, crit).reshape(h * s, w * s, 2)
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

    @property
    def R(self) -> np.ndarray:
        return self.right.R

    @property
    def T(self) -> np.ndarray:
        return self.right.t

    @property
    def baseline_m(self) -> float:
        return float(np.linalg.norm(self.right.t))


# ---------------------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class TexturedRect:
    """A planar rectangle: X = origin + a·u + b·v for a in [a_min, a_max], b in [b_min, b_max] (metres).

    The texture is an image covering that extent (row = b, column = a); `instance_id` 0 is background.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    extent: tuple[float, float, float, float]  # a_min, a_max, b_min, b_max
    texture: np.ndarray  # (Ht, Wt, 3) uint8 RGB
    instance_id: int = 0

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray parameter t (inf where missed) and plane coordinates (a, b) for each ray."""
        n = np.cross(self.u, self.v)
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.origin - origin) @ n) / denom
        hit = origin + t[..., None] * dirs - self.origin
        a, b = hit @ self.u, hit @ self.v
        a0, a1, b0, b1 = self.extent
        ok = (t > 0) & (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        return np.where(ok, t, np.inf), a, b

    def colour(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        a0, a1, b0, b1 = self.extent
        ht, wt = self.texture.shape[:2]
        map_x = ((a - a0) / (a1 - a0) * wt - 0.5).astype(np.float32)
        map_y = ((b - b0) / (b1 - b0) * ht - 0.5).astype(np.float32)
        return cv2.remap(self.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Rendering:
    """One camera's view: image (H, W, 3) uint8, depth_m (H, W) float32 camera z (inf: nothing hit),
    instance_ids (H, W) int32 (0 = background)."""

    image: np.ndarray
    depth_m: np.ndarray
    instance_ids: np.ndarray


@dataclass
class Scene:
    rects: list[TexturedRect] = field(default_factory=list)

    def render(
        self,
        camera: Camera,
        *,
        supersample: int = 3,
        noise_dn: float = 0.0,
        rng: np.random.Generator | None = None,
        rays=None,
    ) -> Rendering:
        """Ray-cast the scene; colours are averaged over s×s samples, depth and ids from the centre one."""
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
            best_t = np.where(closer, t, best_t)
            rgb[closer] = rect.colour(a, b)[closer]
            ids[closer] = rect.instance_id
        h, w = dirs.shape[0] // s, dirs.shape[1] // s
        image = rgb.reshape(h, s, w, s, 3).mean(axis=(1, 3))
        if noise_dn > 0:
            image = image + (rng or np.random.default_rng(0)).normal(0, noise_dn, image.shape)
        c = s // 2  # the centre sample when s is odd; the nearest one otherwise
        # camera z = t because every direction has camera-frame z = 1
        depth = best_t.reshape(h, s, w, s)[:, c, :, c].astype(np.float32)
        return Rendering(
            image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
            depth_m=depth,
            instance_ids=ids.reshape(h, s, w, s)[:, c, :, c].copy(),
        )


def noise_texture(
    rng: np.random.Generator, size: int, base_rgb: tuple[int, int, int], contrast: float = 70.0
) -> np.ndarray:
    """A multi-scale noise texture around a base colour: enough structure for stereo matching."""
    import cv2

    acc = np.zeros((size, size), np.float32)
    for octave, weight in ((4, 1.0), (16, 0.6), (64, 0.4), (size, 0.3)):
        small = rng.standard_normal((octave, octave)).astype(np.float32)
        acc += weight * cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    acc = acc / (acc.std() + 1e-6)
    tex = np.asarray(base_rgb, np.float32)[None, None, :] + contrast * acc[..., None] * np.array(
        [1.0, 0.9, 0.8], np.float32
    )
    return np.clip(tex, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- boards


def board_texture(board: BoardSpec, *, px_per_square: int = 64) -> tuple[np.ndarray, tuple[float, ...]]:
    """Board image (RGB) and its extent in board coordinates (the detector's object-point frame).

    Chessboard: object points are the inner corners at (i·sq, j·sq); ChArUco: OpenCV's board layout,
    outer corner at the origin. A white margin of one square surrounds both.
    """
    import cv2

    sq = board.square_m
    if board.kind == "chessboard":
        nx, ny = board.cols + 1, board.rows + 1  # squares
        cells = (np.indices((ny, nx)).sum(0) % 2 == 0).astype(np.uint8) * 255
        cells = 255 - cells  # black top-left square, as printed boards usually are
        img = np.kron(cells, np.ones((px_per_square, px_per_square), np.uint8))
        img = cv2.copyMakeBorder(
            img, px_per_square, px_per_square, px_per_square, px_per_square, cv2.BORDER_CONSTANT, value=255
        )
        extent = (-2 * sq, nx * sq, -2 * sq, ny * sq)  # margin + first square before corner 0
    else:
        cv_board = charuco_board(board)
        m = px_per_square
        img = cv_board.generateImage((board.cols * m + 2 * m, board.rows * m + 2 * m), marginSize=m)
        extent = (-sq, (board.cols + 1) * sq, -sq, (board.rows + 1) * sq)
    return np.repeat(img[..., None], 3, axis=2), extent


def charuco_board(board: BoardSpec):
    import cv2

    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, board.dictionary or "DICT_5X5_100"))
    return cv2.aruco.CharucoBoard((board.cols, board.rows), board.square_m, board.marker_m, dictionary)


def board_corners(board: BoardSpec) -> np.ndarray:
    """(N, 3) inner-corner object points in board coordinates."""
    if board.kind == "chessboard":
        j, i = np.mgrid[0 : board.rows, 0 : board.cols]
        return np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], -1) * board.square_m
    return charuco_board(board).getChessboardCorners().astype(np.float64)


def random_board_pose(rng: np.random.Generator, board: BoardSpec) -> tuple[np.ndarray, np.ndarray]:
    """A pose (R, t) mapping board coordinates to world, board roughly facing the rig, tilted."""
    corners = board_corners(board)
    centre = corners.mean(0)
    r = rotation(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3))
    z = rng.uniform(0.45, 0.85)
    # anywhere in the view (board_visible rejects poses that leave it), so corners cover the whole image
    pos = np.array([rng.uniform(-0.42, 0.42) * z, rng.uniform(-0.32, 0.32) * z, z])
    return r, pos - r @ centre


def board_scene(board: BoardSpec, pose: tuple[np.ndarray, np.ndarray], backdrop: np.ndarray) -> Scene:
    r, t = pose
    tex, extent = board_texture(board)
    board_rect = TexturedRect(origin=t, u=r[:, 0], v=r[:, 1], extent=extent, texture=tex, instance_id=1)
    wall = TexturedRect(
        origin=np.array([0.0, 0.0, 2.5]),
        u=np.array([1.0, 0, 0]),
        v=np.array([0, 1.0, 0]),
        extent=(-4, 4, -3, 3),
        texture=backdrop,
    )
    return Scene([wall, board_rect])


def board_visible(rig: SyntheticRig, board: BoardSpec, pose, *, margin_px: float = 12.0) -> bool:
    r, t = pose
    pts = board_corners(board) @ r.T + t
    for cam in (rig.left, rig.right):
        cam_pts = pts @ cam.R.T + cam.t
        if (cam_pts[:, 2] <= 0.05).any():
            return False
        px = cam.project(pts)
        w, h = cam.size
        if not (
            (px >= margin_px).all()
            and (px[:, 0] <= w - margin_px).all()
            and (px[:, 1] <= h - margin_px).all()
        ):
            return False
    return True


def render_board_views(
    rig: SyntheticRig,
    board: BoardSpec,
    n_views: int,
    *,
    seed: int = 0,
    supersample: int = 3,
    noise_dn: float = 1.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """n_views (left, right) RGB pairs of the board in random poses fully visible to both eyes."""
    rng = np.random.default_rng(seed)
    backdrop = noise_texture(rng, 256, (120, 120, 120), contrast=25)
    rays_l, rays_r = rig.left.rays(supersample), rig.right.rays(supersample)
    views = []
    while len(views) < n_views:
        pose = random_board_pose(rng, board)
        if not board_visible(rig, board, pose):
            continue
        scene = board_scene(board, pose, backdrop)
        views.append(
            tuple(
                scene.render(cam, supersample=supersample, noise_dn=noise_dn, rng=rng, rays=rays).image
                for cam, rays in ((rig.left, rays_l), (rig.right, rays_r))
            )
        )
    return views
