"""Calibration boards (chessboard, ChArUco) rendered in random poses through a synthetic rig."""

from __future__ import annotations

import numpy as np

from data_schema.calibration import BoardSpec
from labeler.rig.boards import board_corners, charuco_board
from labeler.synthetic._rig import SyntheticRig, rotation
from labeler.synthetic._scene import Scene, TexturedRect
from labeler.synthetic._textures import noise_texture


def board_texture(
    board: BoardSpec, *, px_per_square: int = 64
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
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


Pose = tuple[np.ndarray, np.ndarray]
"""(R, t) mapping board coordinates to world: X_world = R · X_board + t."""


def random_board_pose(rng: np.random.Generator, board: BoardSpec) -> Pose:
    """A pose (R, t) mapping board coordinates to world, board roughly facing the rig, tilted."""
    corners = board_corners(board)
    centre = corners.mean(0)
    r = rotation(rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3))
    z = rng.uniform(0.45, 0.85)
    # anywhere in the view (board_visible rejects poses that leave it), so corners cover the whole image
    pos = np.array([rng.uniform(-0.42, 0.42) * z, rng.uniform(-0.32, 0.32) * z, z])
    return r, pos - r @ centre


def board_scene(board: BoardSpec, pose: Pose, backdrop: np.ndarray) -> Scene:
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


def board_visible(rig: SyntheticRig, board: BoardSpec, pose: Pose, *, margin_px: float = 12.0) -> bool:
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
    rays: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """n_views (left, right) RGB pairs of the board in random poses fully visible to both eyes.

    `rays`: the two cameras' `rays(supersample)`, when the caller renders more with the same rig.
    """
    rng = np.random.default_rng(seed)
    backdrop = noise_texture(rng, 256, (120, 120, 120), contrast=25)
    rays_l, rays_r = rays or (rig.left.rays(supersample), rig.right.rays(supersample))
    views: list[tuple[np.ndarray, np.ndarray]] = []
    while len(views) < n_views:
        pose = random_board_pose(rng, board)
        if not board_visible(rig, board, pose):
            continue
        scene = board_scene(board, pose, backdrop)
        left, right = scene.render_views(
            [(rig.left, rays_l), (rig.right, rays_r)], supersample=supersample, noise_dn=noise_dn, rng=rng
        )
        views.append((left.image, right.image))
    return views
