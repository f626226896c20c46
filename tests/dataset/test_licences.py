"""The licence of every model in a label's history: the table, the manifest record, `labeler validate`, the
gallery, and `--strict-licence commercial`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_schema.backends import (
    ClassicalMasksConfig,
    FoundationStereoConfig,
    Sam2Config,
    Sam3Config,
    SgbmConfig,
)
from data_schema.licences import backend_licences, licence_summary, model_licence, strict_problems


def test_the_table_knows_the_models_of_the_issue():
    fs = model_licence("stereo", "foundation-stereo", "any/name.pth")  # the code decides, whatever the file
    assert (fs.commercial, fs.how) == ("non-commercial", "backend")
    assert model_licence("masks", "sam2", "/w/sam2.1_hiera_small.pt").licence == "Apache-2.0"
    assert model_licence("masks", "sam3", "sam3.pt").licence == "SAM-License"
    assert model_licence("embedding", "dinov2", "dinov2_vits14_pretrain.pth").commercial == "allowed"
    small = model_licence("mono", "depth-anything-v2", "depth_anything_v2_vits.pth")
    large = model_licence("mono", "depth-anything-v2", "depth_anything_v2_vitl.pth")
    assert (small.commercial, large.commercial) == ("allowed", "non-commercial")
    assert large.licence == "CC-BY-NC-4.0"
    # a file name of another family, or none at all, is not evidence
    assert model_licence("masks", "sam2", "sam3.pt").commercial == "unknown"
    assert model_licence("masks", "sam2", None).commercial == "unknown"
    assert [m.commercial for m in backend_licences(SgbmConfig(), ClassicalMasksConfig())] == ["allowed"] * 2


def test_summary_and_strict_name_the_non_commercial_model():
    lic = backend_licences(
        FoundationStereoConfig(weights=Path("r/model_best_bp2.pth")), Sam3Config(classes="a")
    )
    line = licence_summary(lic)
    assert "NON-COMMERCIAL" in line and "foundation-stereo" in line and "unknown: sam3" in line
    assert len(strict_problems(lic, "commercial")) == 2  # non-commercial and unknown both refused
    assert strict_problems(lic, None) == []
    assert (
        strict_problems(
            backend_licences(SgbmConfig(), Sam2Config(checkpoint=Path("sam2_hiera_large.pt"))), "commercial"
        )
        == []
    )


def test_sgbm_dataset_records_its_licences_in_manifest_validate_and_gallery(tmp_path_factory):
    from labeler.cli.main import app
    from labeler.review.gallery import write_gallery
    from tests.train.conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path_factory.getbasetemp())
    manifest = json.loads((ds / "manifest.json").read_text())
    assert [(m["model"], m["commercial"]) for m in manifest["licences"]] == [
        ("sgbm", "allowed"),
        ("classical", "allowed"),
    ]
    res = CliRunner().invoke(app, ["validate", str(ds), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    assert "commercial use allowed by every known model" in res.output and "NON-COMMERCIAL" not in res.output
    index = write_gallery(ds).read_text()
    assert "commercial use allowed" in index


def test_strict_licence_refuses_to_label_with_foundation_stereo(tmp_path):
    """Refused before anything is read or written (the weights need not even exist)."""
    from data_schema.commands import PseudoLabelConfig
    from labeler.errors import LabelerError
    from pipelines.pseudo_label import run_pseudo_label

    cfg = PseudoLabelConfig(
        inputs=tmp_path / "in",
        calib=tmp_path / "c.yaml",
        out=tmp_path / "ds",
        stereo=FoundationStereoConfig(weights=tmp_path / "model_best_bp2.pth"),
        strict_licence="commercial",
    )
    with pytest.raises(LabelerError, match="foundation-stereo .*non-commercial"):
        run_pseudo_label(cfg)
    assert not (tmp_path / "ds").exists()


def test_foundation_stereo_dataset_says_non_commercial_in_validate(tmp_path_factory, tmp_path):
    """A dataset labelled by FoundationStereo (labeler's own deterministic ViT-S release, 1 iteration)."""
    from data_schema.commands import PseudoLabelConfig
    from labeler.cli.main import app
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs
    from tests.train.conftest import make_vits_release

    weights = make_vits_release(tmp_path_factory.getbasetemp())
    write_plane_pairs(tmp_path / "pairs", 1, 128, 96, seed=3)
    ds = tmp_path / "ds"
    stereo = FoundationStereoConfig(weights=weights, valid_iters=1, lr_check=False, max_disp=64)
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=tmp_path / "pairs",
            calib=identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96),
            out=ds,
            stereo=stereo,
            scheduler="sync",
            previews=False,
            progress=False,
        )
    )
    res = CliRunner().invoke(app, ["validate", str(ds), "--no-progress", "--scheduler", "sync"])
    assert res.exit_code == 0, res.output
    assert "non-commercial" in res.output and "foundation-stereo (stereo, model_best_bp2.pth)" in res.output
    assert "NON-COMMERCIAL" in (ds / "index.html").read_text()


def test_a_trained_run_records_the_licences_of_its_training_data(tmp_path_factory, tmp_path):
    from data_schema.licences import LicenceRecord
    from labeler.train.heads.api import train_heads
    from tests.train.conftest import make_tiny_dataset, tiny_train_config

    ds = make_tiny_dataset(tmp_path_factory.getbasetemp())
    train_heads(tiny_train_config(ds, tmp_path / "run", epochs=1))
    rec = LicenceRecord.model_validate_json((tmp_path / "run" / "licences.json").read_text())
    assert [(m.role, m.model, m.how) for m in rec.models] == [
        ("parent weights", "dinov2-random-init", "backend"),  # the tiny ViT's seeded init: licence "none"
        ("training data: stereo", "sgbm", "inherited"),
        ("training data: masks", "classical", "inherited"),
    ]
    assert rec.models[0].licence == "none" and rec.models[0].commercial == "allowed"


@pytest.mark.parametrize(
    ("name", "layout", "want"),
    [
        ("dinov2_vits14_pretrain.pth", "dinov2", ("dinov2", "Apache-2.0", "allowed", "file name")),
        ("depth_anything_v2_vits.pth", "dav2", ("depth-anything-v2", "Apache-2.0", "allowed", "file name")),
        (
            "depth_anything_v2_vitl.pth",
            "dav2",
            ("depth-anything-v2", "CC-BY-NC-4.0", "non-commercial", "file name"),
        ),
        ("my_backbone.pth", "dinov2", ("dinov2", "unknown", "unknown", "unknown")),
    ],
)
def test_train_heads_records_its_backbone_weights_licence(tmp_path_factory, tmp_path, name, layout, want):
    """The parent weights' licence by the checkpoint's family (its layout) and published file name; the
    finetune of the run keeps it."""
    import torch

    from data_schema.licences import LicenceRecord
    from labeler.io import sha256_file
    from labeler.train.heads.api import finetune, train_heads
    from tests.train.conftest import make_tiny_dataset, tiny_train_config
    from tests.train.test_weights import dav2_state

    state = dav2_state(seed=3)
    if layout == "dinov2":
        state = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
    weights = tmp_path / name
    torch.save(state, weights)
    ds = make_tiny_dataset(tmp_path_factory.getbasetemp())
    train_heads(tiny_train_config(ds, tmp_path / "run", epochs=1, weights=weights))
    rec = LicenceRecord.model_validate_json((tmp_path / "run" / "licences.json").read_text())
    first = rec.models[0]
    assert (first.role, first.weights, first.weights_sha256) == ("parent weights", name, sha256_file(weights))
    assert (first.model, first.licence, first.commercial, first.how) == want
    assert [m.role for m in rec.models[1:]] == ["training data: stereo", "training data: masks"]
    if name == "depth_anything_v2_vitl.pth":
        from data_schema.commands import FinetuneConfig

        finetune(FinetuneConfig(run=tmp_path / "run", epochs=1, unfreeze_last=1))
        again = LicenceRecord.model_validate_json(
            (tmp_path / "run" / "finetune" / "licences.json").read_text()
        )
        assert again.models == rec.models
