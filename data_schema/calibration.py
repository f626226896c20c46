"""Stereo calibration records: `calib/<rig>.yaml` and the report written beside it.

The YAML layout is a contract later stages and users rely on (OpenCV meanings throughout):
`schema_version`, `rig`, `image_size: [width, height]` (one eye), `left: {K, dist}`, `right: {K, dist}`,
`R` (3x3), `T` ([3], metres; right camera: X_r = R·X_l + T), `baseline_m`, `rms_reprojection_px`,
`rectification: {R1, R2, P1, P2, Q}`.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator

from data_schema.record import Record

CALIBRATION_SCHEMA_VERSION: Final = 1

Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Row3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Row4 = Annotated[list[float], Field(min_length=4, max_length=4)]
Mat3x3 = Annotated[list[Row3], Field(min_length=3, max_length=3)]
Mat3x4 = Annotated[list[Row4], Field(min_length=3, max_length=3)]
Mat4x4 = Annotated[list[Row4], Field(min_length=4, max_length=4)]


class CameraIntrinsics(Record):
    """Pinhole intrinsics and OpenCV distortion (k1, k2, p1, p2[, k3[, k4, k5, k6]])."""

    K: Mat3x3
    dist: list[float] = Field(min_length=4, max_length=14)


class Rectification(Record):
    """cv2.stereoRectify outputs: rotations into the rectified frames, rectified projections, Q."""

    R1: Mat3x3
    R2: Mat3x3
    P1: Mat3x4
    P2: Mat3x4
    Q: Mat4x4

    @property
    def left_intrinsics(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy of the rectified left camera (from P1), px."""
        return self.P1[0][0], self.P1[1][1], self.P1[0][2], self.P1[1][2]


BoardKind = Literal["chessboard", "charuco"]


# cv2.aruco's predefined dictionaries (the names `--dictionary` takes)
ARUCO_DICTIONARIES = (
    *(f"DICT_{n}X{n}_{k}" for n in (4, 5, 6, 7) for k in (50, 100, 250, 1000)),
    "DICT_ARUCO_ORIGINAL",
    "DICT_APRILTAG_16h5",
    "DICT_APRILTAG_25h9",
    "DICT_APRILTAG_36h10",
    "DICT_APRILTAG_36h11",
    "DICT_ARUCO_MIP_36h12",
)


class BoardSpec(Record):
    """The calibration target."""

    kind: BoardKind
    cols: int = Field(ge=2, description="chessboard: inner corners per row; charuco: squares per row")
    rows: int = Field(ge=2, description="chessboard: inner corners per column; charuco: squares per column")
    square_m: float = Field(gt=0, description="square side in metres")
    marker_m: float | None = Field(None, gt=0, description="charuco: marker side in metres")
    dictionary: str | None = Field(None, description="charuco: cv2.aruco dictionary name, e.g. DICT_5X5_100")

    @model_validator(mode="after")
    def _charuco(self) -> BoardSpec:
        if self.kind != "charuco":
            return self
        if self.marker_m is None:
            raise ValueError("--board charuco needs the marker side: pass --marker-m (metres)")
        if self.marker_m >= self.square_m:
            raise ValueError(f"marker_m {self.marker_m} must be smaller than square_m {self.square_m}")
        if self.dictionary is not None and self.dictionary not in ARUCO_DICTIONARIES:
            raise ValueError(
                f"--dictionary {self.dictionary}: no such ArUco dictionary; choose one of "
                "DICT_{4,5,6,7}X{4,5,6,7}_{50,100,250,1000} (e.g. DICT_5X5_100), DICT_ARUCO_ORIGINAL, "
                "DICT_APRILTAG_{16h5,25h9,36h10,36h11}, DICT_ARUCO_MIP_36h12"
            )
        return self


class StereoCalibration(Record):
    """A calibrated, rectifiable stereo rig (the content of `calib/<rig>.yaml`)."""

    schema_version: Literal[1] = CALIBRATION_SCHEMA_VERSION
    rig: str = Field(min_length=1)
    image_size: Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        description="[width, height] of one eye, px"
    )
    left: CameraIntrinsics
    right: CameraIntrinsics
    R: Mat3x3 = Field(description="rotation left -> right camera: X_r = R·X_l + T")
    T: Vec3 = Field(description="translation left -> right camera, metres")
    baseline_m: float = Field(gt=0)
    rms_reprojection_px: float = Field(ge=0)
    rectification: Rectification
    alpha: float | None = Field(
        None, description="stereoRectify free scaling used (-1 default, 0 crop, 1 keep all)"
    )
    board: BoardSpec | None = None
    n_views: int | None = Field(None, ge=0, description="views used after outlier rejection")

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) <= 0:
            raise ValueError("image_size must be positive [width, height]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StereoCalibration:
        """Numbers a rectification can use: finite, positive focal lengths and baseline, rotations."""
        r = self.rectification
        named: list[tuple[str, list]] = [
            ("left.K", self.left.K),
            ("left.dist", self.left.dist),
            ("right.K", self.right.K),
            ("right.dist", self.right.dist),
            ("R", self.R),
            ("T", self.T),
            ("rectification.R1", r.R1),
            ("rectification.R2", r.R2),
            ("rectification.P1", r.P1),
            ("rectification.P2", r.P2),
            ("rectification.Q", r.Q),
            ("baseline_m", [self.baseline_m]),
        ]
        for name, value in named:
            flat = [v for row in value for v in (row if isinstance(row, list) else [row])]
            if not all(math.isfinite(v) for v in flat):
                raise ValueError(f"{name} has a value that is not a finite number (NaN or inf)")
        for eye in ("left", "right"):
            k = getattr(self, eye).K
            if not (k[0][0] > 0 and k[1][1] > 0):
                raise ValueError(f"{eye}.K: focal lengths fx, fy must be positive, got {k[0][0]}, {k[1][1]}")
        for name, m in (("R", self.R), ("rectification.R1", r.R1), ("rectification.R2", r.R2)):
            gram = [[sum(m[i][k] * m[j][k] for k in range(3)) for j in range(3)] for i in range(3)]
            off = max(abs(gram[i][j] - (i == j)) for i in range(3) for j in range(3))
            det = (
                m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
            )
            if off > 1e-3 or det <= 0:
                raise ValueError(
                    f"{name} is not a rotation (R·Rᵀ differs from I by {off:.3g}, det {det:.3g})"
                )
        p1, p2 = r.P1, r.P2
        if not p1[0][0] > 0:
            raise ValueError(f"rectification.P1: fx must be positive, got {p1[0][0]}")
        if not (
            math.isclose(p1[0][0], p2[0][0], rel_tol=1e-6) and math.isclose(p1[1][2], p2[1][2], abs_tol=1e-6)
        ):
            raise ValueError("rectification.P1 and P2 disagree (fx or cy differ): not one rectification")
        if not -p2[0][3] / p2[0][0] > 0:
            raise ValueError(
                f"rectification.P2: baseline -P2[0][3]/P2[0][0] must be positive, got {-p2[0][3] / p2[0][0]}"
            )
        return self

    @property
    def rectified_fx_px(self) -> float:
        """Focal length of the rectified cameras (P1[0][0]), px."""
        return float(self.rectification.P1[0][0])

    @property
    def rectified_baseline_m(self) -> float:
        """Baseline of the rectified pair from P2 = [fx 0 cx -fx·B], metres."""
        p2 = self.rectification.P2
        return float(-p2[0][3] / p2[0][0])


class ViewResult(Record):
    """One board view in the calibration report."""

    view_id: str
    source: str
    corners_found: int = Field(ge=0)
    left_rms_px: float | None = None
    right_rms_px: float | None = None
    used: bool
    reason: str | None = Field(None, description="why the view was dropped")


class CalibrationReport(Record):
    """What calibration saw and did, per view; written as `<rig>.report/report.json`."""

    schema_version: Literal[1] = CALIBRATION_SCHEMA_VERSION
    rig: str
    board: BoardSpec
    views: list[ViewResult]
    left_rms_px: float
    right_rms_px: float
    stereo_rms_px: float
    baseline_m: float
    alpha: float
