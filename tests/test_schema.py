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


def test_package_reexports_every_record():
    """Every record defined in a data_schema module is importable from `data_schema` (manifest_v1, the
    legacy layout read only by `labeler migrate`, excepted), and `__all__` names nothing missing."""
    import importlib
    import inspect
    import pkgutil

    import data_schema
    from data_schema.record import Record

    assert all(hasattr(data_schema, name) for name in data_schema.__all__)
    for info in pkgutil.iter_modules(data_schema.__path__):
        if info.name in ("export", "manifest_v1"):
            continue
        module = importlib.import_module(f"data_schema.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Record) and obj.__module__ == module.__name__:
                assert name in data_schema.__all__, f"data_schema.{info.name}.{name} is not re-exported"


def test_heads_records_stay_importable_from_their_old_homes():
    import data_schema as ds
    from data_schema import commands as configs
    from labeler import predict
    from labeler.synthetic import demo

    assert configs.HeadsModelConfig is ds.HeadsModelConfig and configs.InstanceParams is ds.InstanceParams
    assert predict.PredictionSet is ds.PredictionSet and predict.ImagePrediction is ds.ImagePrediction
    assert demo.DemoTruth is ds.DemoTruth


def test_epoch_metrics_keep_the_metrics_file_columns():
    """metrics.json rows of runs made before the records existed validate, and the fields keep the order
    runs have always logged (training figures, then held-out ones)."""
    from data_schema import EpochMetrics, HeldoutFigures
    from labeler.train.report import EPOCH_COLUMNS

    old_row = {"epoch": 2, "train_loss": 1.5, "lr": 0.001, "seconds": 0.5, "train_samples_per_s": 6.0}
    old_row |= {"train_depth": 0.3, "heldout_loss": 1.4, "abs_rel": 0.38, "delta1": float("nan")}
    row = EpochMetrics.model_validate(old_row)
    assert set(EpochMetrics.model_fields) == set(EPOCH_COLUMNS)
    trained = ["train_loss", "lr", "seconds", "train_samples_per_s", "train_depth"]
    assert list(row.figures()) == [*trained, "heldout_loss", "abs_rel", "delta1"]
    assert row.model_dump(exclude_none=True).keys() == old_row.keys()
    assert row.heldout == HeldoutFigures(heldout_loss=1.4, abs_rel=0.38, delta1=row.delta1)
    with pytest.raises(ValidationError, match="extra"):
        EpochMetrics.model_validate({**old_row, "abs_rel_typo": 1.0})


def test_finetune_change_is_after_minus_before():
    from data_schema import HeldoutFigures

    before = HeldoutFigures(heldout_loss=1.25, abs_rel=0.5, fg_iou=0.75)
    after = HeldoutFigures(heldout_loss=1.0, abs_rel=0.25, mask_ap50=0.5)
    assert after.change_from(before) == HeldoutFigures(heldout_loss=-0.25, abs_rel=-0.25)
