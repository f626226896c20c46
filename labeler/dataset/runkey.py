"""The run key: one hash of everything that shapes a dataset's labels (backend configs, calibration, depth
settings, shard size, object policy). Shards made under another key are not the dataset's; `labeler
validate` recomputes it from the manifest, so an edited config, calibration hash or depth setting is found."""

from __future__ import annotations

import hashlib
import json

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.manifest import DepthSettings, ObjectPolicy


def run_key(
    stereo: StereoConfig,
    masks: MaskConfig,
    calibration_sha256: str,
    depth: DepthSettings,
    samples_per_shard: int,
    objects: ObjectPolicy,
) -> str:
    text = json.dumps(
        [
            stereo.model_dump(mode="json"),
            masks.model_dump(mode="json"),
            calibration_sha256,
            depth.model_dump_json(),
            samples_per_shard,
            objects.model_dump(mode="json"),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()
