"""Calibration board geometry: the board's inner corners in board coordinates and the OpenCV ChArUco board.
Calibration and the synthetic renderer both use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from data_schema.calibration import BoardSpec

if TYPE_CHECKING:
    import cv2


def charuco_board(board: BoardSpec) -> cv2.aruco.CharucoBoard:
    import cv2

    if board.marker_m is None:
        raise ValueError("a ChArUco board needs marker_m")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, board.dictionary or "DICT_5X5_100"))
    return cv2.aruco.CharucoBoard((board.cols, board.rows), board.square_m, board.marker_m, dictionary)


def board_corners(board: BoardSpec) -> np.ndarray:
    """(N, 3) inner-corner object points in board coordinates."""
    if board.kind == "chessboard":
        j, i = np.mgrid[0 : board.rows, 0 : board.cols]
        return np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], -1) * board.square_m
    return np.asarray(charuco_board(board).getChessboardCorners(), np.float64)
