"""The autocast body FoundationStereo takes on CUDA, run on the CPU under CPU autocast
(`labeler.models.precision.cpu_autocast`) in bfloat16 with labeler's deterministic ViT-S release: the same
code, its matmuls and convolutions in bfloat16, its disparity float32, finite and close to the float32 one;
outside the stand-in the CPU stays float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_schema.backends import FoundationStereoConfig
from labeler.models.precision import cpu_autocast
from labeler.stereo.foundation_stereo import FoundationStereoBackend
from labeler.testing.scenes import square_scene
from tests.conftest import layer_output_dtypes


@pytest.fixture(scope="module")
def vits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import foundation_stereo_release

    return foundation_stereo_release(tmp_path_factory.getbasetemp())


def test_bf16_body_runs_on_the_cpu(vits_weights: Path) -> None:
    torch.set_num_threads(2)
    scene = square_scene(64, 96)
    # a small cost volume (max_disp 64) and 2 iterations keep it a few seconds; the network's output as is
    cfg = FoundationStereoConfig(
        weights=vits_weights,
        valid_iters=2,
        max_disp=64,
        amp_dtype="bfloat16",
        lr_check=False,
        remove_invisible=False,
    )
    plain = FoundationStereoBackend(cfg)
    assert plain.autocast is False  # the release asks for mixed precision; the CPU stays float32
    with layer_output_dtypes() as seen:
        ref = plain.disparity(scene.left, scene.right)
    assert set(seen) == {torch.float32} and ref.dtype == "float32"

    with cpu_autocast():
        amp = FoundationStereoBackend(cfg)
        amp._model = plain.model  # the same weights: only the precision differs
        assert amp.autocast is True
        with layer_output_dtypes() as seen:
            out = amp.disparity(scene.left, scene.right)
    assert len(seen) > 300 and set(seen) == {torch.bfloat16}  # every linear / conv of the network
    assert out.dtype == "bfloat16" and out.iters == 2 and out.scale == 1.0  # the per-sample record
    d = out.disparity_px
    assert d.shape == (64, 96) and d.dtype == np.float32 and out.confidence.dtype == np.float32
    assert np.isfinite(d).all() and np.isfinite(out.confidence).all()
    # bfloat16 rounding through random-like weights moves the disparity a little, not the picture
    diff = np.abs(d - ref.disparity_px)
    assert np.median(diff) < 0.25 and diff.max() < 2.0, (np.median(diff), diff.max())
    assert not np.array_equal(d, ref.disparity_px)  # it did run in another precision
