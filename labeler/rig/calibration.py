"""Stereo calibration from board captures -> `calib/<rig>.yaml` (data_schema.StereoCalibration).

Per-camera intrinsics first (cv2.calibrateCameraExtended), views whose reprojection error is an
outlier dropped and the cameras re-solved, then a joint stereo refinement (cv2.stereoCalibrateExtended)
and rectification (cv2.stereoRectify with a documented `alpha`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from data_schema.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    BoardSpec,
    CalibrationReport,
    CameraIntrinsics,
    Rectification,
    StereoCalibration,
    ViewResult,
)
from data_schema.captures import CaptureLayout, StereoPairSource
from labeler.errors import InputError, LabelerError
from labeler.io import write_text_atomic
from labeler.rig.captures import discover_pairs, load_pair

MIN_VIEWS = 6
# A view is an outlier when its error exceeds median + k·(robust sigma) and this floor (px): below it,
# spread between views is detector noise, not a bad view.
OUTLIER_SIGMAS = 3.0
OUTLIER_FLOOR_PX = 0.5


class CalibrationError(LabelerError):
    """Calibration cannot proceed (too few views, inconsistent sizes); one line for the user."""


@dataclass(frozen=True)
class BoardView:
    """Board corners seen by both eyes in one capture (only corners found in both)."""

    view_id: str
    source: str
    object_points: np.ndarray  # (N, 3) float32, metres, board frame
    left_px: np.ndarray  # (N, 2) float32
    right_px: np.ndarray  # (N, 2) float32


@dataclass(frozen=True)
class CalibrationResult:
    calibration: StereoCalibration
    report: CalibrationReport
    views: list[BoardView]
    image_size: tuple[int, int]
    preview: tuple[np.ndarray, np.ndarray] | None  # the first used raw pair, for the rectified preview


# ------------------------------------------------------------------------------------------ detection


def _subpix_window(corners: np.ndarray) -> int:
    """Half-window for cornerSubPix: a third of the smallest corner spacing, so it stays in one square."""
    d = np.linalg.norm(np.diff(corners.reshape(-1, 2), axis=0), axis=1)
    return int(np.clip(np.median(d) / 3.0, 2, 11))


def detect_board(gray: np.ndarray, board: BoardSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """Find board corners in a grey image.

    Returns:
        (ids (N,) int, corners (N, 2) float32 sub-pixel) or None when the board is not found.
        Chessboard ids are row-major corner indices, ordered so corner 0 is the top-left one.
    """
    import cv2

    if board.kind == "chessboard":
        size = (board.cols, board.rows)
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        ok, corners = cv2.findChessboardCorners(gray, size, flags=flags)
        if not ok:
            return None
        win = _subpix_window(corners)
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
        corners = cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit).reshape(-1, 2)
        # The detector may return a board rotated by 180°; make the ordering the same in both eyes.
        if corners[0].sum() > corners[-1].sum():
            corners = corners[::-1].copy()
        return np.arange(len(corners)), corners.astype(np.float32)
    from labeler.rig.boards import charuco_board

    detector = cv2.aruco.CharucoDetector(charuco_board(board))
    ch_corners, ch_ids, _, _ = detector.detectBoard(gray)
    if ch_ids is None or len(ch_ids) < 6:
        return None
    return ch_ids.reshape(-1).astype(int), ch_corners.reshape(-1, 2).astype(np.float32)


def board_object_points(board: BoardSpec, ids: np.ndarray) -> np.ndarray:
    from labeler.rig.boards import board_corners

    return board_corners(board)[ids].astype(np.float32)


def collect_views(
    root: Path, board: BoardSpec, *, layout: str, stride: int
) -> tuple[list[BoardView], list[ViewResult], tuple[int, int], tuple[np.ndarray, np.ndarray] | None]:
    """Detect the board in every capture; failures become ViewResults with a reason, never exceptions."""
    import cv2

    preview = None
    views: list[BoardView] = []
    results: list[ViewResult] = []
    size: tuple[int, int] | None = None
    orphans: list[tuple[StereoPairSource, str]] = []  # a frame without its partner is a dropped view
    sources = discover_pairs(root, layout=layout, stride=stride, orphans=orphans)
    for orphan, problem in orphans:
        results.append(
            ViewResult(
                view_id=orphan.pair_id, source=orphan.left_path, corners_found=0, used=False, reason=problem
            )
        )
    for src in sources:
        source = (
            src.left_path if src.layout is not CaptureLayout.video else f"{src.left_path}#{src.frame_index}"
        )

        def skip(reason: str, found: int = 0, src: StereoPairSource = src, source: str = source) -> None:
            results.append(
                ViewResult(view_id=src.pair_id, source=source, corners_found=found, used=False, reason=reason)
            )

        try:
            left, right = load_pair(src)
        except InputError as err:
            skip(str(err))
            continue
        this_size = (left.shape[1], left.shape[0])
        if size is None:
            size = this_size
        elif this_size != size:
            skip(
                f"{source}: image size {this_size[0]}x{this_size[1]} differs from the first view's "
                f"{size[0]}x{size[1]}; calibrate one resolution at a time"
            )
            continue
        found_l, found_r = (
            detect_board(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), board) for img in (left, right)
        )
        if found_l is None or found_r is None:
            eye = "left" if found_l is None else "right"
            skip(f"board not found in the {eye} image")
            continue
        (ids_l, px_l), (ids_r, px_r) = found_l, found_r
        common, il, ir = np.intersect1d(ids_l, ids_r, return_indices=True)
        if len(common) < 6:
            skip(f"only {len(common)} corners seen by both eyes (need 6)", len(common))
            continue
        views.append(BoardView(src.pair_id, source, board_object_points(board, common), px_l[il], px_r[ir]))
        preview = preview or (left, right)
        results.append(ViewResult(view_id=src.pair_id, source=source, corners_found=len(common), used=True))
    return views, results, size or (0, 0), preview


# ---------------------------------------------------------------------------------------------- solve


def _calibrate_eye(views: list[BoardView], eye: str, size: tuple[int, int]):
    import cv2

    obj = [v.object_points for v in views]
    img = [getattr(v, f"{eye}_px") for v in views]
    # the stubs lack the overload with None for "estimate K and d" that OpenCV documents
    rms, k, d, _, _, _, _, per_view = cv2.calibrateCameraExtended(obj, img, size, None, None)  # type: ignore[call-overload]
    return rms, k, d.reshape(-1), per_view.reshape(-1)


def _calibrate_pair(views: list[BoardView], size: tuple[int, int], k_l, d_l, k_r, d_r):
    """Joint refinement of both cameras and R, T; per-view error is the worse eye's RMS."""
    import cv2

    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-9)
    # the stubs lack the overload with None for R and T (outputs) that OpenCV documents
    rms, k_l, d_l, k_r, d_r, r, t, _, _, _, _, per_view = cv2.stereoCalibrateExtended(  # type: ignore[call-overload]
        [v.object_points for v in views],
        [v.left_px for v in views],
        [v.right_px for v in views],
        k_l,
        d_l,
        k_r,
        d_r,
        size,
        None,
        None,
        flags=cv2.CALIB_USE_INTRINSIC_GUESS,
        criteria=crit,
    )
    return rms, k_l, d_l, k_r, d_r, r, t, per_view.reshape(len(views), 2).max(axis=1)


def _outliers(errors: np.ndarray) -> np.ndarray:
    med = np.median(errors)
    sigma = 1.4826 * np.median(np.abs(errors - med))
    return (errors > med + OUTLIER_SIGMAS * sigma) & (errors > OUTLIER_FLOOR_PX)


def calibrate(
    root: str | Path,
    *,
    rig: str,
    board: BoardSpec,
    layout: str = "auto",
    stride: int = 10,
    alpha: float = 0.0,
) -> CalibrationResult:
    """Calibrate a stereo rig from board captures.

    Args:
        root: captures (side-by-side frames, left/ + right/ folders, or a video).
        rig: rig name stored in the file.
        board: the board used.
        layout: capture layout or "auto".
        stride: video frame stride.
        alpha: cv2.stereoRectify free scaling: 0 crops to valid pixels only, 1 keeps every source pixel
            (black borders), -1 OpenCV's default.

    Raises:
        CalibrationError: fewer than 6 usable views remain.
    """
    import cv2

    root = Path(root)
    views, results, size, preview = collect_views(root, board, layout=layout, stride=stride)
    if len(views) < MIN_VIEWS:
        raise CalibrationError(
            f"{root}: the board was found in both eyes in only {len(views)} of {len(results)} captures "
            f"(need at least {MIN_VIEWS}); capture more views, or check --board/--cols/--rows "
            f"(inner corners for a chessboard)"
        )
    dropped: dict[str, str] = {}
    # Solve, drop outlier views, solve again. A view can be an outlier for one eye (a bad detection) or
    # only for the pair (eyes not exposed together), so both per-eye and stereo errors are checked.
    for round_ in range(3):
        rms_l, k_l, d_l, err_l = _calibrate_eye(views, "left", size)
        rms_r, k_r, d_r, err_r = _calibrate_eye(views, "right", size)
        rms, k_l, d_l, k_r, d_r, r, t, err_s = _calibrate_pair(views, size, k_l, d_l, k_r, d_r)
        worst = np.maximum.reduce([err_l, err_r, err_s])
        bad = _outliers(worst)
        if round_ == 2 or not bad.any() or len(views) - bad.sum() < MIN_VIEWS:
            break  # the solution above is for exactly the views kept
        med = float(np.median(worst))
        for i in np.flatnonzero(bad):
            dropped[views[i].view_id] = (
                f"reprojection error outlier: left {err_l[i]:.2f} px, right {err_r[i]:.2f} px, stereo "
                f"{err_s[i]:.2f} px (median view {med:.2f} px)"
            )
        views = [v for v, b in zip(views, bad, strict=True) if not b]
    r1, r2, p1, p2, q, _, _ = cv2.stereoRectify(
        k_l, d_l, k_r, d_r, size, r, t, flags=cv2.CALIB_ZERO_DISPARITY, alpha=alpha
    )
    t = t.reshape(3)
    calib = StereoCalibration(
        rig=rig,
        image_size=list(size),
        left=CameraIntrinsics(K=k_l.tolist(), dist=d_l.reshape(-1).tolist()),
        right=CameraIntrinsics(K=k_r.tolist(), dist=d_r.reshape(-1).tolist()),
        R=r.tolist(),
        T=t.tolist(),
        baseline_m=float(np.linalg.norm(t)),
        rms_reprojection_px=float(rms),
        rectification=Rectification(
            R1=r1.tolist(), R2=r2.tolist(), P1=p1.tolist(), P2=p2.tolist(), Q=q.tolist()
        ),
        alpha=alpha,
        board=board,
        n_views=len(views),
    )
    per_view = {v.view_id: (el, er) for v, el, er in zip(views, err_l, err_r, strict=True)}
    final = []
    for res in results:
        if res.view_id in dropped:
            res = res.model_copy(update={"used": False, "reason": dropped[res.view_id]})
        if res.view_id in per_view:
            el, er = per_view[res.view_id]
            res = res.model_copy(update={"left_rms_px": float(el), "right_rms_px": float(er)})
        final.append(res)
    report = CalibrationReport(
        rig=rig,
        board=board,
        views=final,
        left_rms_px=float(rms_l),
        right_rms_px=float(rms_r),
        stereo_rms_px=float(rms),
        baseline_m=calib.baseline_m,
        alpha=alpha,
    )
    return CalibrationResult(calib, report, views, size, preview)


# ------------------------------------------------------------------------------------------ YAML I/O


class _FlowMatrices(yaml.SafeDumper):
    """Dump lists of numbers in flow style so matrices read as rows."""


def _repr_list(dumper: yaml.SafeDumper, data: list):
    flow = all(isinstance(x, (int, float)) for x in data) or all(
        isinstance(x, list) and all(isinstance(y, (int, float)) for y in x) for x in data
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow and bool(data))


_FlowMatrices.add_representer(list, _repr_list)


def calibration_yaml(calib: StereoCalibration) -> str:
    return yaml.dump(calib.model_dump(mode="json"), Dumper=_FlowMatrices, sort_keys=False, width=200)


def save_calibration(calib: StereoCalibration, path: str | Path) -> None:
    write_text_atomic(path, calibration_yaml(calib))


_MAX_CALIBRATION_BYTES = 1 << 20  # a calibration YAML is a few KB; anything this big is another file


def load_calibration(path: str | Path) -> StereoCalibration:
    """Read `calib/<rig>.yaml`; every problem is one InputError line naming the file and the fix."""
    path = Path(path)
    regen = "re-run `labeler calibrate` to write a current file"
    if not path.is_file():
        raise InputError(
            path, "calibration file not found", "pass --calib with the YAML `labeler calibrate` wrote"
        )
    if path.stat().st_size > _MAX_CALIBRATION_BYTES:
        raise InputError(
            path,
            f"{path.stat().st_size} bytes: not a calibration (a few KB)",
            "pass the YAML `labeler calibrate` wrote",
        )
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise InputError(path, "not a text file", "pass the YAML `labeler calibrate` wrote") from None
    except yaml.YAMLError as err:
        raise InputError(
            path, f"not valid YAML ({str(err).splitlines()[0]})", "fix or regenerate it"
        ) from None
    if not isinstance(data, dict):
        raise InputError(path, "not a calibration mapping", regen)
    version = data.get("schema_version")
    if version is None:
        raise InputError(path, "has no schema_version (an older or foreign calibration file)", regen)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(
            path, f"schema_version must be the integer {CALIBRATION_SCHEMA_VERSION}, got {version!r}", regen
        )
    if version != CALIBRATION_SCHEMA_VERSION:
        relation = "older" if isinstance(version, int) and version < CALIBRATION_SCHEMA_VERSION else "newer"
        raise InputError(
            path,
            f"schema_version {version} is {relation} than this labeler reads ({CALIBRATION_SCHEMA_VERSION})",
            regen if relation == "older" else "upgrade labeler",
        )
    try:
        return StereoCalibration.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = str(e["msg"]).removeprefix("Value error, ")
            if e["type"] == "missing":
                problems.append(f"missing field '{loc}'")
            else:
                problems.append(f"'{loc}': {msg}" if loc else msg)
        raise InputError(path, "; ".join(problems), f"add the field(s) or {regen}") from None
