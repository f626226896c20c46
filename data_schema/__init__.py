"""labeler's data schema: versioned pydantic v2 records, exported as JSON Schema beside this file.

Every record derives from `Record`: frozen, unknown fields are errors. Top-level documents carry a
`schema_version`. `python -m data_schema.export` rewrites the JSON Schema files; a test fails when they
drift from the models. The modules: `backends` (stereo and mask backend configs), `calibration`
(calib/<rig>.yaml and its report), `captures` (raw and rectified pairs), `manifest` (datasets),
`heads` (heads checkpoints and run metrics), `predictions` (`labeler predict`), `demo` (`labeler demo`
truth). `manifest_v1` (the v1 dataset layout, read only by `labeler migrate`) is not re-exported here.
"""

from data_schema.backends import (
    BackendConfig,
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
from data_schema.demo import DEMO_SCHEMA_VERSION, DemoTruth, ObjectTruth, RigTruth, SceneTruth
from data_schema.heads import (
    HEADS_SCHEMA_VERSION,
    Backbone,
    EpochMetrics,
    FinetuneComparison,
    HeadsModelConfig,
    HeadsTask,
    HeldoutFigures,
    InstanceParams,
    TrainFigures,
)
from data_schema.manifest import (
    MANIFEST_SCHEMA_VERSION,
    ArrayDigests,
    ArraySpec,
    CocoRle,
    DatasetCounts,
    DepthSettings,
    LabelTask,
    Manifest,
    ObjectRecord,
    ObjectRow,
    SampleRecord,
    SampleStats,
    ShardEntry,
    ShardPlan,
    SourceFiles,
    StoreLayout,
    TableRef,
)
from data_schema.predictions import (
    PREDICTIONS_SCHEMA_VERSION,
    ImagePrediction,
    PredictedObject,
    PredictionSet,
    StereoComparison,
)
from data_schema.record import Record

__all__ = [
    "CALIBRATION_SCHEMA_VERSION",
    "CAPTURES_SCHEMA_VERSION",
    "DEMO_SCHEMA_VERSION",
    "HEADS_SCHEMA_VERSION",
    "MANIFEST_SCHEMA_VERSION",
    "PREDICTIONS_SCHEMA_VERSION",
    "ArrayDigests",
    "ArraySpec",
    "Backbone",
    "BackendConfig",
    "BoardSpec",
    "CalibrationReport",
    "CameraIntrinsics",
    "CaptureLayout",
    "ClassicalMasksConfig",
    "CocoRle",
    "DatasetCounts",
    "DemoTruth",
    "DepthSettings",
    "EpochMetrics",
    "FinetuneComparison",
    "FoundationStereoConfig",
    "HeadsModelConfig",
    "HeadsTask",
    "HeldoutFigures",
    "ImagePrediction",
    "InstanceParams",
    "LabelTask",
    "Manifest",
    "MaskConfig",
    "ObjectRecord",
    "ObjectRow",
    "ObjectTruth",
    "PredictedObject",
    "PredictionSet",
    "Record",
    "Rectification",
    "RectifiedPair",
    "RectifiedSet",
    "RigTruth",
    "SampleRecord",
    "SampleStats",
    "Sam2Config",
    "SceneTruth",
    "SgbmConfig",
    "ShardEntry",
    "ShardPlan",
    "SourceFiles",
    "StereoCalibration",
    "StereoComparison",
    "StereoConfig",
    "StereoPairSource",
    "StoreLayout",
    "TableRef",
    "TrainFigures",
    "ViewResult",
]
