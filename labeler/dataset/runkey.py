"""The run key: one hash of everything that shapes a dataset's labels (backend configs, calibration, depth
settings, shard size, object policy, and the tracking settings where the mask backend tracks objects itself,
as its masks then depend on them). Shards made under another key are not the dataset's; `labeler
validate` recomputes it from the manifest, so an edited config, calibration hash or depth setting is found."""

from __future__ import annotations

import hashlib
import json

from data_schema.backends import MaskConfig, StereoConfig
from data_schema.manifest import DepthSettings, ObjectPolicy, TrackingConfig


def run_key(
    stereo: StereoConfig,
    masks: MaskConfig,
    calibration_sha256: str,
    depth: DepthSettings,
    samples_per_shard: int,
    objects: ObjectPolicy,
    tracking: TrackingConfig | None = None,
) -> str:
    """`tracking`: the run's --track settings (None: not tracked); they enter the key only for a mask
    backend that tracks objects itself, so every other key is what it was before tracking existed."""
    parts: list[object] = [
        stereo.model_dump(mode="json"),
        masks.key_dump(),
        calibration_sha256,
        depth.model_dump_json(),
        samples_per_shard,
        objects.model_dump(mode="json"),
    ]
    if tracking is not None and masks.tracks_itself():
        parts.append({"tracking": tracking.model_dump(mode="json")})
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
