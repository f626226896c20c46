"""Truth disparity of held-out samples, in the dataset's rectified left frame (px, NaN where unknown).

Two sources (`--truth`):

- a `labeler demo` folder (`truth/truth.json` + `truth/<scene>.npz`): the renderer's raw left-camera depth.
  Each rectified left pixel (u, v) was sampled from a raw pixel (the dataset calibration's remap table);
  that raw pixel's true ray (the rig's true intrinsics) at the rendered depth is a 3-D point, which the
  true right camera sees at a raw pixel, which the dataset's rectification puts at (u_r, v_r) in the
  rectified right image. The disparity is u - u_r: what a perfect matcher finds in the dataset's own
  rectified pair, calibration errors included;
- a folder of `<sample_id>.npy` (H, W) float disparity maps already in the rectified frame (any rig with
  a truth of its own: structured light, a laser scan projected).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from data_schema.calibration import StereoCalibration
from labeler.errors import LabelerError

TRUTH_FLAG = "--truth"


class TruthSource(Protocol):
    def disparity(self, sample_id: str) -> np.ndarray | None:
        """(H, W) float32 truth disparity in px, NaN where unknown; None when this sample has none."""
        ...


@dataclass(frozen=True)
class NpyTruth:
    """`FOLDER/<sample_id>.npy` disparity maps in the rectified left frame."""

    folder: Path
    size_wh: tuple[int, int]

    def disparity(self, sample_id: str) -> np.ndarray | None:
        path = self.folder / f"{sample_id}.npy"
        if not path.is_file():
            return None
        d = np.load(path).astype(np.float32)
        if d.shape != (self.size_wh[1], self.size_wh[0]):
            raise LabelerError(
                f"{path}: truth of shape {d.shape}, the dataset's images are "
                f"{self.size_wh[0]}x{self.size_wh[1]} "
                f"(pass {TRUTH_FLAG} disparities of the rectified images)"
            )
        return np.where(np.isfinite(d), d, np.nan).astype(np.float32)


@dataclass(frozen=True)
class DemoRigTruth:
    """A `labeler demo` folder's rendered depth, seen through the dataset's calibration (module docstring)."""

    folder: Path
    calibration: StereoCalibration

    def disparity(self, sample_id: str) -> np.ndarray | None:
        path = self.folder / "truth" / f"{sample_id}.npz"
        if not path.is_file():
            return None
        return rectified_truth_disparity(np.load(path)["depth_m"], self.folder, self.calibration)


def rectified_truth_disparity(raw_depth_m: np.ndarray, demo: Path, calib: StereoCalibration) -> np.ndarray:
    """(H, W) float32 disparity of the rectified left frame from the demo's raw left depth (inf = nothing)."""
    import cv2

    from labeler.rig.rectify import RectifyMaps
    from labeler.synthetic.demo import load_demo_truth

    rig = load_demo_truth(demo).rig
    maps = RectifyMaps.from_calibration(calib)
    mx, my = maps.left
    h, w = mx.shape
    depth = np.where(np.isfinite(raw_depth_m), raw_depth_m, 0).astype(np.float32)
    z = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    raw_px = np.stack([mx, my], axis=-1).reshape(-1, 1, 2).astype(np.float64)
    k_l, dist_l = np.array(rig.K_left), np.array(rig.dist_left)
    rays = cv2.undistortPoints(raw_px, k_l, dist_l).reshape(-1, 2)
    zf = z.reshape(-1).astype(np.float64)
    points = np.column_stack([rays * zf[:, None], zf])  # true left camera frame, metres
    r_true, t_true = np.array(rig.R), np.array(rig.T)
    raw_right, _ = cv2.projectPoints(
        points, cv2.Rodrigues(r_true)[0], t_true, np.array(rig.K_right), np.array(rig.dist_right)
    )
    right = calib.right
    rect = calib.rectification
    rect_right = cv2.undistortPoints(
        raw_right.reshape(-1, 1, 2),
        np.array(right.K),
        np.array(right.dist),
        R=np.array(rect.R2),
        P=np.array(rect.P2),
    ).reshape(h, w, 2)
    u = np.arange(w, dtype=np.float64)[None, :]
    disp = u - rect_right[..., 0]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return np.where((z > 0) & inside & np.isfinite(disp), disp, np.nan).astype(np.float32)


def truth_source(path: Path | None, calibration: StereoCalibration) -> TruthSource | None:
    """The source behind `--truth PATH` (None without it); one line naming the flag when it is neither."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if (path / "truth" / "truth.json").is_file():
        return DemoRigTruth(path, calibration)
    w, h = calibration.image_size
    if path.is_dir() and any(path.glob("*.npy")):
        return NpyTruth(path, (w, h))
    raise LabelerError(
        f"{TRUTH_FLAG} {path}: neither a `labeler demo` folder (truth/truth.json) nor a folder of "
        f"<sample_id>.npy disparity maps"
    )
