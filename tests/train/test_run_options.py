"""The trainers' shared run settings are declared once: every trainer's config derives from the shared
records of data_schema/train.py, and every trainer command shows the shared flags with the same names and
types, each with its config's default."""

from __future__ import annotations

import pytest
import typer

from data_schema.commands import FinetuneConfig, TrainHeadsConfig
from data_schema.dino_adapt import AdaptBackboneConfig
from data_schema.record import Record
from data_schema.sam2_train import TrainSam2Config
from data_schema.stereo_train import TrainStereoConfig
from data_schema.train import TrainOptions, TrainRunConfig
from labeler.cli.main import app

RUN_CONFIGS = {
    "train-heads": TrainHeadsConfig,
    "train-stereo": TrainStereoConfig,
    "train-sam2": TrainSam2Config,
    "adapt-backbone": AdaptBackboneConfig,
}
CONFIGS: dict[str, type[Record]] = {**RUN_CONFIGS, "finetune": FinetuneConfig}
# flag -> the config field it sets
SHARED = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup_frac": "warmup_frac",
    "weight_decay": "weight_decay",
    "heldout_frac": "heldout_frac",
    "seed": "seed",
    "workers": "workers",
    "gpu": "gpus",
    "amp": "amp",
    "resume": "resume",
    "include_rejected": "include_rejected",
    "selection": "selection",
}
# the flags a command parses into a field of another name or into the model config
NOT_FIELDS = {
    "train-heads": {"gpu", "backbone", "task", "max_depth_m", "input_size"},
    "finetune": {"gpu", "run_dir"},
}


def _params(name: str) -> dict:
    """The click parameters of `labeler NAME`, by name (the flag's Python name)."""
    return {p.name: p for p in typer.main.get_command(app).commands[name].params if p.name}


def test_every_trainer_config_derives_from_the_shared_records():
    for config in RUN_CONFIGS.values():
        assert issubclass(config, TrainRunConfig)
    assert issubclass(FinetuneConfig, TrainOptions) and not issubclass(FinetuneConfig, TrainRunConfig)
    for config in CONFIGS.values():
        assert config.model_config["frozen"] and config.model_config["extra"] == "forbid"


def test_the_shared_flags_have_one_name_and_type_and_the_configs_defaults():
    seen: dict[str, tuple[list[str], list[str], type]] = {}
    for command, config in CONFIGS.items():
        params = _params(command)
        assert {"epochs", "lr", "gpu", "resume", "include_rejected"} <= set(params), command
        for flag in set(SHARED) & set(params):
            p = params[flag]
            shape = (sorted(p.opts), sorted(p.secondary_opts), p.type_descriptor.annotation)
            assert seen.setdefault(flag, shape) == shape, f"{command} --{flag}"
            if flag == "gpu":
                assert p.default is None and config.model_fields["gpus"].default == ()
            else:
                assert p.default == config.model_fields[SHARED[flag]].default, f"{command} --{flag}"
    assert seen["amp"][1] == ["--no-amp"] and seen["epochs"] == (["--epochs"], [], int)
    assert set(seen) == set(SHARED)


@pytest.mark.parametrize("command", sorted(RUN_CONFIGS))
def test_every_flag_sets_its_field(command):
    """`config_of` passes each flag to the field of its name: a flag without one would fail every run."""
    fields = set(CONFIGS[command].model_fields)
    flags = set(_params(command)) - NOT_FIELDS.get(command, {"gpu"})
    assert flags <= fields, flags - fields
