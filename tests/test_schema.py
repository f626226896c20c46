from __future__ import annotations

import pytest
from pydantic import ValidationError

from data_schema.export import EXPORTED, schema_path, schema_text


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_json_schema_matches_models(name):
    assert schema_path(name).read_text() == schema_text(EXPORTED[name]), (
        f"{schema_path(name)} drifted from the model: run `make schemas` and commit the result"
    )


def test_records_are_frozen_and_strict():
    from data_schema import SgbmConfig, StereoPairSource

    src = StereoPairSource(pair_id="a", layout="pairs", left_path="l.png", right_path="r.png")
    with pytest.raises(ValidationError):
        src.pair_id = "b"
    with pytest.raises(ValidationError, match="extra"):
        StereoPairSource(pair_id="a", layout="pairs", left_path="l", colour="red")
    with pytest.raises(ValidationError):
        SgbmConfig(block_size=0)


def test_backend_configs_round_trip_through_the_union():
    from pydantic import TypeAdapter

    from data_schema import MaskConfig, Sam2Config, SgbmConfig, StereoConfig

    stereo = TypeAdapter(StereoConfig)
    assert stereo.validate_json(SgbmConfig().model_dump_json()) == SgbmConfig()
    masks = TypeAdapter(MaskConfig)
    assert masks.validate_python({"name": "sam2", "points_per_side": 8}) == Sam2Config(points_per_side=8)
