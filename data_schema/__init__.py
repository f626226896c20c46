"""labeler's data schema: versioned pydantic v2 records, exported as JSON Schema beside this file.

Every record is frozen and forbids unknown fields. `python -m data_schema.export` rewrites the JSON
Schema files; a test fails when they drift from the models.
"""

from data_schema.backends import (
    ClassicalMasksConfig,
    FoundationStereoConfig,
    MaskConfig,
    Sam2Config,
    SgbmConfig,
    StereoConfig,
)
from data_schema.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    BoardSpec,
    CalibrationReport,
    CameraIntrinsics,
    Rectification,
    StereoCalibration,
    ViewResult,
)
from data_schema.captures import (
    CAPTURES_SCHEMA_VERSION,
    CaptureLayout,
    RectifiedPair,
    RectifiedSet,
    StereoPairSource,
)

__all__ = [
    "CALIBRATION_SCHEMA_VERSION",
    "CAPTURES_SCHEMA_VERSION",
    "BoardSpec",
    "CalibrationReport",
    "CameraIntrinsics",
    "CaptureLayout",
    "ClassicalMasksConfig",
    "FoundationStereoConfig",
    "MaskConfig",
    "Rectification",
    "RectifiedPair",
    "RectifiedSet",
    "Sam2Config",
    "SgbmConfig",
    "StereoCalibration",
    "StereoConfig",
    "StereoPairSource",
    "ViewResult",
]
