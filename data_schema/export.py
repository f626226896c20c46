"""Export the top-level records as JSON Schema files (`python -m data_schema.export`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

import data_schema as ds
from data_schema.manifest import Manifest, ObjectRow, SampleRecord, ShardEntry, ShardPlan

SCHEMA_DIR = Path(__file__).parent

# The documents a user or another tool reads; nested records appear inside them as $defs.
EXPORTED: dict[str, type[BaseModel]] = {
    "stereo_calibration": ds.StereoCalibration,
    "calibration_report": ds.CalibrationReport,
    "rectified_set": ds.RectifiedSet,
    "manifest": Manifest,
    "shard_entry": ShardEntry,
    "shard_plan": ShardPlan,
    "sample_record": SampleRecord,
    "object_row": ObjectRow,
}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def main() -> None:
    for name, model in EXPORTED.items():
        schema_path(name).write_text(schema_text(model))
        print(schema_path(name))


if __name__ == "__main__":
    main()
