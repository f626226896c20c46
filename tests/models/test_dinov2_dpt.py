"""DINOv2 + DPT in the Depth Anything V2 layout: parameter names, shapes, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labeler.models.dinov2_dpt import VIT_SPECS, DinoDPT

# the official FoundationStereo state dict's names, shapes and dtypes, per ViT size
# (written by benchmarks/make_foundation_stereo_vectors.py)
FS_OFFICIAL_KEYS = Path(__file__).resolve().parent / "data" / "foundation_stereo_official_keys.json"
BRANCH = "feature.dino.depth_anything."  # where FoundationStereo embeds a DAv2 model
# name, shape and dtype of every tensor of the official DepthAnythingV2 classes (relative depth, all four
# sizes; metric depth, ViT-S), written once from the official repository by benchmarks/dump_dav2_keys.py
OFFICIAL_KEYS = Path(__file__).resolve().parent / "data" / "dav2_official_keys.json"


@pytest.mark.parametrize("vit", ["vits", "vitl"])
def test_layout_is_the_dav2_branch_of_foundation_stereo(vit: str) -> None:
    with torch.device("meta"):
        model = DinoDPT(vit)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    listed = json.loads(FS_OFFICIAL_KEYS.read_text())[vit]
    release = {name[len(BRANCH) :]: shape for name, shape, _ in listed if name.startswith(BRANCH)}
    assert ours == release


@pytest.mark.parametrize(
    "name", ["relative/vits", "relative/vitb", "relative/vitl", "relative/vitg", "metric/vits"]
)
def test_layout_is_the_official_depth_anything_v2(name: str) -> None:
    """Every tensor of the official class, with its shape and dtype, and no other: DAv2 checkpoints load
    strictly (the metric class differs only in its head's final activation, which has no tensors)."""
    variant, vit = name.split("/")
    with torch.device("meta"):
        model = DinoDPT(vit, output_activation="sigmoid" if variant == "metric" else "relu")
    ours = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    official = {
        k: (shape, dtype) for k, shape, dtype in json.loads(OFFICIAL_KEYS.read_text())["models"][name]
    }
    differ = sorted(k for k in ours.keys() | official.keys() if ours.get(k) != official.get(k))
    assert not differ, f"{len(differ)} tensors differ, e.g. " + ", ".join(
        f"{k}: ours {ours.get(k)}, official {official.get(k)}" for k in differ[:3]
    )
    assert len(ours) == len(official) > 200


def test_vitg_has_the_swiglu_feed_forward() -> None:
    with torch.device("meta"):
        model = DinoDPT("vitg")
    sd = model.state_dict()
    assert list(sd["pretrained.blocks.39.mlp.w12.weight"].shape) == [8192, 1536]
    assert list(sd["pretrained.blocks.39.mlp.w3.weight"].shape) == [1536, 4096]
    assert list(sd["depth_head.projects.3.weight"].shape) == [1536, 1536, 1, 1]


def test_outputs_and_activations() -> None:
    torch.manual_seed(0)
    relu = DinoDPT("vits").eval()
    with torch.no_grad():  # the random init's raw output sits near -0.1: centre it so that it has both signs
        relu.depth_head.scratch.output_conv2[2].bias.add_(0.1)
    sigmoid = DinoDPT("vits", output_activation="sigmoid", max_depth=20.0).eval()
    sigmoid.load_state_dict(relu.state_dict())
    identity = DinoDPT("vits", output_activation="identity").eval()
    identity.load_state_dict(relu.state_dict())
    x = torch.randn(2, 3, 28, 42)  # a 2 x 3 patch grid
    with torch.inference_mode():
        layers = relu.intermediate_features(x)
        assert len(layers) == 4
        assert all(t.shape == (2, 6, 384) and c.shape == (2, 384) for t, c in layers)
        assert relu.dense_features(x).shape == (2, relu.dense_channels, 28, 42) == (2, 32, 28, 42)
        rel = relu(x)
        metric = sigmoid(x)
        raw = identity(x)  # the head's output before its last activation
    assert rel.shape == metric.shape == raw.shape == (2, 28, 42)
    assert (raw < 0).any() and (raw > 0).any()  # so the activations below have something to do
    torch.testing.assert_close(rel, torch.relu(raw))
    torch.testing.assert_close(metric, 20.0 * torch.sigmoid(raw))


def test_position_embedding_resampling() -> None:
    vit = DinoDPT("vits").pretrained
    stored = vit.pos_embed
    assert vit.position_embedding(37, 37, square_input=True) is stored  # the pretraining grid, as stored
    resampled = vit.position_embedding(16, 24, square_input=False)
    assert resampled.shape == (1, 1 + 16 * 24, VIT_SPECS["vits"].embed_dim)
    torch.testing.assert_close(resampled[:, 0], stored[:, 0])  # the class token's entry is kept
