"""Backbone weights: DAv2 / FoundationStereo / DINOv2 layouts load strictly; anything else is one line naming
--weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_schema.commands import HeadsModelConfig
from labeler.errors import WeightsError
from labeler.train.heads.model import build_model
from labeler.train.weights import load_backbone_weights

TINY = HeadsModelConfig(backbone="tiny", input_size=28)
# the official FoundationStereo state dict's names, shapes and dtypes, per ViT size
# (written by benchmarks/make_foundation_stereo_vectors.py)
FS_KEYS = Path(__file__).resolve().parents[1] / "models" / "data" / "foundation_stereo_official_keys.json"


def dav2_state(seed: int) -> dict[str, torch.Tensor]:
    """A Depth Anything V2-shaped state dict (pretrained.* + depth_head.*) of the tiny size, other values."""
    donor = build_model(HeadsModelConfig(backbone="tiny", task="depth", input_size=28), seed=seed)
    return {
        k: v.clone() for k, v in donor.state_dict().items() if k.startswith(("pretrained.", "depth_head."))
    }


def test_dav2_checkpoint_loads_strictly(tmp_path):
    state = dav2_state(seed=5)
    torch.save(state, tmp_path / "depth_anything_v2_tiny.pth")
    model = build_model(TINY, seed=0)
    seg_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("seg_head.")}
    info = load_backbone_weights(model, tmp_path / "depth_anything_v2_tiny.pth", backbone="tiny")
    assert info.kind == "depth-anything-v2" and info.n_tensors == len(state)
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items())  # ViT and depth head start from DAv2
    assert all(torch.equal(now[k], v) for k, v in seg_before.items())  # other heads keep their init


def test_foundation_stereo_and_dinov2_layouts(tmp_path):
    state = dav2_state(seed=6)
    fs = {f"feature.dino.depth_anything.{k}": v for k, v in state.items()}
    fs["feature.stem.0.weight"] = torch.zeros(3)  # the rest of a FoundationStereo checkpoint is ignored
    torch.save({"model": fs, "global_step": 1}, tmp_path / "model_best_bp2.pth")
    model = build_model(TINY)
    assert (
        load_backbone_weights(model, tmp_path / "model_best_bp2.pth", backbone="tiny").kind
        == "foundation-stereo"
    )
    assert torch.equal(
        model.state_dict()["depth_head.scratch.output_conv1.weight"],
        state["depth_head.scratch.output_conv1.weight"],
    )

    vit_only = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
    torch.save(vit_only, tmp_path / "dinov2_tiny14_pretrain.pth")
    model = build_model(TINY)
    head_before = model.state_dict()["depth_head.scratch.output_conv1.weight"].clone()
    assert (
        load_backbone_weights(model, tmp_path / "dinov2_tiny14_pretrain.pth", backbone="tiny").kind
        == "dinov2"
    )
    assert torch.equal(
        model.state_dict()["pretrained.blocks.3.mlp.fc2.weight"], vit_only["blocks.3.mlp.fc2.weight"]
    )
    assert torch.equal(model.state_dict()["depth_head.scratch.output_conv1.weight"], head_before)


@pytest.mark.parametrize("damage", ["missing", "extra", "shape"])
def test_wrong_checkpoint_is_one_line_naming_the_flag(tmp_path, damage):
    state = dav2_state(seed=7)
    if damage == "missing":
        del state["depth_head.scratch.refinenet1.out_conv.bias"]
    elif damage == "extra":
        state["depth_head.scratch.output_conv3.weight"] = torch.zeros(1)
    else:
        state["pretrained.cls_token"] = torch.zeros(1, 1, 384)  # a ViT-S token: the size hint names vits
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        load_backbone_weights(build_model(TINY), tmp_path / "bad.pth", backbone="tiny")
    msg = str(err.value)
    assert "\n" not in msg and "--weights" in msg and "bad.pth" in msg
    assert {"missing": "1 missing", "extra": "1 unexpected", "shape": "--backbone vits"}[damage] in msg


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth: no such file; pass --weights"):
        load_backbone_weights(build_model(TINY), tmp_path / "nope.pth", backbone="tiny")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_backbone_weights(build_model(TINY), tmp_path / "junk.pth", backbone="tiny")


def test_vits_layout_matches_the_release_keys():
    """The released FoundationStereo ViT-S carries a real DAv2 ViT-S: our names and shapes must equal its."""
    prefix = "feature.dino.depth_anything."
    release = {
        k[len(prefix) :]: shape
        for k, shape, _ in json.loads(FS_KEYS.read_text())["vits"]
        if k.startswith(prefix)
    }
    with torch.device("meta"):
        model = build_model(HeadsModelConfig(backbone="vits", task="depth"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == release
