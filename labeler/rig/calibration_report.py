"""What `labeler calibrate` writes beside the YAML: report.json, a corner-coverage PNG, a rectified
preview with epipolar lines, and (on request) ROS camera_info files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from data_schema.calibration import StereoCalibration
from labeler.errors import InputError
from labeler.io import out_folder, safe_name, write_png, write_text_atomic
from labeler.rig.calibration import CalibrationResult


def report_dir(calib_path: str | Path) -> Path:
    """`calib/<rig>.yaml` -> `calib/<rig>.report/`."""
    p = Path(calib_path)
    return p.with_name(p.stem + ".report")


def coverage_image(result: CalibrationResult) -> np.ndarray:
    """Left | right canvases with every used corner (one colour per view), so gaps in coverage show."""
    import cv2

    w, h = result.image_size
    canvases = [np.full((h, w, 3), 32, np.uint8) for _ in range(2)]
    hues = np.linspace(0, 179, max(1, len(result.views)), endpoint=False).astype(np.uint8)
    for view, hue in zip(result.views, hues, strict=True):
        colour = cv2.cvtColor(np.array([[[hue, 220, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0].tolist()
        for canvas, pts in zip(canvases, (view.left_px, view.right_px), strict=True):
            for x, y in pts:
                cv2.circle(canvas, (round(float(x)), round(float(y))), 2, colour, -1, cv2.LINE_AA)
    for canvas, name in zip(canvases, ("left", "right"), strict=True):
        cv2.rectangle(canvas, (0, 0), (w - 1, h - 1), (200, 200, 200), 1)
        cv2.putText(
            canvas,
            f"{name}: {len(result.views)} views",
            (10, 24),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return np.hstack(canvases)


def epipolar_preview(left: np.ndarray, right: np.ndarray, *, spacing_px: int = 32) -> np.ndarray:
    """Rectified left | right with horizontal lines: features must sit on the same line in both."""
    import cv2

    img = np.hstack([left, right]).copy()
    for i, y in enumerate(range(spacing_px // 2, img.shape[0], spacing_px)):
        colour = (0, 255, 0) if i % 2 == 0 else (255, 64, 64)
        cv2.line(img, (0, y), (img.shape[1] - 1, y), colour, 1, cv2.LINE_AA)
    return img


def write_report(
    result: CalibrationResult, calib_path: str | Path, preview_pair: tuple[np.ndarray, np.ndarray] | None
) -> Path:
    """Write report.json, coverage.png and rectified_preview.png; returns the report folder."""
    from labeler.rig.rectify import RectifyMaps, rectify_pair

    folder = report_dir(calib_path)
    write_text_atomic(folder / "report.json", result.report.model_dump_json(indent=2))
    write_png(folder / "coverage.png", coverage_image(result))
    if preview_pair is not None:
        maps = RectifyMaps.from_calibration(result.calibration)
        write_png(
            folder / "rectified_preview.png",
            epipolar_preview(*rectify_pair(preview_pair[0], preview_pair[1], maps)),
        )
    return folder


def ros_camera_info(calib: StereoCalibration, eye: str) -> dict:
    """ROS sensor_msgs/CameraInfo in the camera_calibration_parsers YAML layout."""
    cam = calib.left if eye == "left" else calib.right
    rect = calib.rectification
    r, p = (rect.R1, rect.P1) if eye == "left" else (rect.R2, rect.P2)
    w, h = calib.image_size

    def mat(rows: int, cols: int, m) -> dict:
        return {"rows": rows, "cols": cols, "data": [float(x) for x in np.asarray(m, float).reshape(-1)]}

    return {
        "image_width": w,
        "image_height": h,
        "camera_name": f"{calib.rig}_{eye}",
        "camera_matrix": mat(3, 3, cam.K),
        "distortion_model": "plumb_bob" if len(cam.dist) == 5 else "rational_polynomial",
        "distortion_coefficients": mat(1, len(cam.dist), cam.dist),
        "rectification_matrix": mat(3, 3, r),
        "projection_matrix": mat(3, 4, p),
    }


def export_ros(calib: StereoCalibration, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write `<rig>_left.camera_info.yaml` and `<rig>_right.camera_info.yaml` into `out_dir`; an existing
    one is replaced only with `overwrite` (InputError, one line, before anything is written)."""
    out_folder(out_dir)
    paths = [Path(out_dir) / f"{safe_name(calib.rig)}_{eye}.camera_info.yaml" for eye in ("left", "right")]
    there = [p for p in paths if p.exists() or p.is_symlink()]
    if there and not overwrite:
        raise InputError(there[0], "exists (an earlier export?)", "pass --overwrite to replace it")
    for eye, path in zip(("left", "right"), paths, strict=True):
        write_text_atomic(path, yaml.safe_dump(ros_camera_info(calib, eye), sort_keys=False))
    return paths
