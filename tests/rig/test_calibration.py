"""Calibration against a rendered rig with known truth (distortion + a small rotation between cameras)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from data_schema.calibration import BoardSpec
from labeler.errors import InputError
from labeler.io import write_png
from labeler.rig.calibration import CalibrationError, calibrate, load_calibration
from tests.conftest import CHESSBOARD, write_side_by_side


def test_recovers_the_rig(calibrated, rig):
    result, _ = calibrated
    c = result.calibration
    assert abs(c.baseline_m / rig.baseline_m - 1) < 0.005
    assert abs(c.left.K[0][0] / rig.left.K[0, 0] - 1) < 0.005
    assert abs(c.right.K[0][0] / rig.right.K[0, 0] - 1) < 0.005
    assert c.rms_reprojection_px < 0.5
    # the small rotation between the cameras is recovered too (angle of R_est^T R_true)
    err = cv2.Rodrigues(np.array(c.R).T @ rig.R)[0]
    assert np.degrees(np.linalg.norm(err)) < 0.05
    assert c.n_views == 12
    assert all(v.used for v in result.report.views)


def test_rectified_geometry_matches_truth(calibrated, rig):
    """3-D points seen by the true rig land on the same row in both rectified images."""
    result, _ = calibrated
    c = result.calibration
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-0.8, 0.8, 500), rng.uniform(-0.5, 0.5, 500), rng.uniform(1.0, 4.0, 500)], -1)
    rect = c.rectification
    rows = []
    for cam, intr, r, p in ((rig.left, c.left, rect.R1, rect.P1), (rig.right, c.right, rect.R2, rect.P2)):
        px = cam.project(pts)
        ok = (px[:, 0] > 0) & (px[:, 0] < 640) & (px[:, 1] > 0) & (px[:, 1] < 480)
        und = cv2.undistortPoints(
            px.reshape(-1, 1, 2), np.array(intr.K), np.array(intr.dist), R=np.array(r), P=np.array(p)
        ).reshape(-1, 2)
        rows.append((und, ok))
    both = rows[0][1] & rows[1][1]
    dy = np.abs(rows[0][0][both, 1] - rows[1][0][both, 1])
    # the far image corners, outside most board views, extrapolate the distortion model: a looser max
    assert np.median(dy) < 0.05 and np.percentile(dy, 95) < 0.25 and dy.max() < 1.0
    # and depth from the rectified disparity is metric: z = fx·B / d
    disparity = rows[0][0][both, 0] - rows[1][0][both, 0]
    z = c.rectified_fx_px * c.rectified_baseline_m / disparity
    # z in the rectified left frame = (R1 · X)_z
    z_true = (pts[both] @ np.array(rect.R1).T)[:, 2]
    assert np.median(np.abs(z / z_true - 1)) < 0.005


def test_yaml_layout_and_round_trip(calibrated, tmp_path):
    result, path = calibrated
    data = yaml.safe_load(path.read_text())
    for key in (
        "schema_version",
        "rig",
        "image_size",
        "left",
        "right",
        "R",
        "T",
        "baseline_m",
        "rms_reprojection_px",
        "rectification",
    ):
        assert key in data
    assert data["image_size"] == [640, 480]
    assert set(data["rectification"]) == {"R1", "R2", "P1", "P2", "Q"}
    assert np.array(data["rectification"]["P1"]).shape == (3, 4)
    assert load_calibration(path) == result.calibration


def test_outlier_view_is_dropped(tmp_path, board_views, rig):
    """A pair whose eyes were not exposed together (the board moved 8 mm in between) fits neither the
    other views' R, T: it is dropped, reported, and the calibration stays accurate."""
    from labeler.synthetic import board_scene, noise_texture, random_board_pose

    rng = np.random.default_rng(7)
    r, t = random_board_pose(rng, CHESSBOARD)
    backdrop = noise_texture(rng, 64, (120, 120, 120), 25)
    left = board_scene(CHESSBOARD, (r, t), backdrop).render(rig.left).image
    right = board_scene(CHESSBOARD, (r, t + np.array([0.008, 0.0, 0.0])), backdrop).render(rig.right).image
    write_side_by_side(tmp_path, board_views[:8])
    write_side_by_side(tmp_path, [(left, right)], prefix="zz_unsynced")
    result = calibrate(tmp_path, rig="t", board=CHESSBOARD)
    dropped = {v.view_id: v.reason for v in result.report.views if not v.used}
    assert list(dropped) == ["zz_unsynced_000"]
    assert "outlier" in dropped["zz_unsynced_000"]
    assert abs(result.calibration.baseline_m / rig.baseline_m - 1) < 0.005


def test_bad_captures_are_recorded_and_skipped(tmp_path, board_views, rig):
    write_side_by_side(tmp_path, board_views[:7])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    write_png(tmp_path / "blank.png", np.full((480, 1280, 3), 128, np.uint8))
    write_png(tmp_path / "odd.png", np.full((480, 1281, 3), 128, np.uint8))
    result = calibrate(tmp_path, rig="t", board=CHESSBOARD)
    reasons = {v.view_id: v.reason for v in result.report.views if not v.used}
    assert set(reasons) == {"broken", "blank", "odd"}
    assert "not a readable image" in reasons["broken"] and "broken.png" in reasons["broken"]
    assert "board not found" in reasons["blank"]
    assert "odd width 1281" in reasons["odd"]
    assert result.calibration.n_views == 7
    assert abs(result.calibration.baseline_m / rig.baseline_m - 1) < 0.01


def test_too_few_views_is_one_clear_error(tmp_path, board_views):
    write_side_by_side(tmp_path, board_views[:4])
    with pytest.raises(CalibrationError) as err:
        calibrate(tmp_path, rig="t", board=CHESSBOARD)
    msg = str(err.value)
    assert "\n" not in msg and "only 4 of 4" in msg and "at least 6" in msg and str(tmp_path) in msg


def test_wrong_board_size_finds_nothing(tmp_path, board_views):
    write_side_by_side(tmp_path, board_views[:6])
    with pytest.raises(CalibrationError, match="only 0 of 6"):
        calibrate(tmp_path, rig="t", board=BoardSpec(kind="chessboard", cols=7, rows=5, square_m=0.03))


def test_left_right_folders_give_the_same_result(tmp_path, board_views, calibrated):
    for i, (left, right) in enumerate(board_views):
        write_png(tmp_path / "left" / f"board_{i:03d}.png", left)
        write_png(tmp_path / "right" / f"board_{i:03d}.png", right)
    result = calibrate(tmp_path, rig="test-rig", board=CHESSBOARD)
    assert result.calibration == calibrated[0].calibration


def test_video_input(tmp_path, board_views, rig):
    path = tmp_path / "boards.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (1280, 480))
    for left, right in board_views[:8]:
        writer.write(cv2.cvtColor(np.hstack([left, right]), cv2.COLOR_RGB2BGR))
    writer.release()
    result = calibrate(path, rig="t", board=CHESSBOARD, stride=1)
    assert result.calibration.n_views == 8
    assert abs(result.calibration.baseline_m / rig.baseline_m - 1) < 0.01  # JPEG frames: a looser bound


def test_charuco_with_partial_views(tmp_path, rig):
    """ChArUco keeps views where part of the board is hidden."""
    from labeler.synthetic import render_board_views

    board = BoardSpec(
        kind="charuco", cols=8, rows=6, square_m=0.035, marker_m=0.026, dictionary="DICT_5X5_100"
    )
    # 2 x 2 samples per pixel (not 3 x 3): 3.5 times faster to render, as accurate (baseline 1e-4, fx 8e-4)
    views = render_board_views(rig, board, 10, seed=5, supersample=2)
    for left, right in views[:4]:  # hide the right part of both images
        left[:, 440:] = 128
        right[:, 440:] = 128
    write_side_by_side(tmp_path, views)
    result = calibrate(tmp_path, rig="t", board=board)
    used = [v.corners_found for v in result.report.views if v.used]
    assert min(used) < 35 == max(used)  # 7x5 inner corners on a full view
    assert result.calibration.n_views >= 8
    assert abs(result.calibration.baseline_m / rig.baseline_m - 1) < 0.005
    assert abs(result.calibration.left.K[0][0] / rig.left.K[0, 0] - 1) < 0.005


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(schema_version=0), "schema_version 0 is older than this labeler reads (1)"),
        (lambda d: d.pop("schema_version"), "has no schema_version"),
        (lambda d: d.update(schema_version=7), "upgrade labeler"),
        (lambda d: d["rectification"].pop("P2"), "missing field 'rectification.P2'"),
        (lambda d: d.pop("baseline_m"), "missing field 'baseline_m'"),
    ],
)
def test_bad_calibration_files(calibrated, tmp_path, edit, expected):
    data = yaml.safe_load(calibrated[1].read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as err:
        load_calibration(path)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_calibration_file(tmp_path):
    with pytest.raises(InputError, match="calibration file not found.*--calib"):
        load_calibration(tmp_path / "nope.yaml")


def test_ros_camera_info(calibrated, tmp_path):
    from labeler.rig.calibration_report import export_ros

    calib = calibrated[0].calibration
    left, right = export_ros(calib, tmp_path)
    info = yaml.safe_load(right.read_text())
    assert info["image_width"] == 640 and info["image_height"] == 480
    assert np.allclose(np.array(info["camera_matrix"]["data"]).reshape(3, 3), calib.right.K)
    assert np.allclose(np.array(info["projection_matrix"]["data"]).reshape(3, 4), calib.rectification.P2)
    assert info["distortion_model"] == "plumb_bob"
