"""The bfloat16 autocast bodies SAM2 and SAM 3 take on CUDA, run on the CPU under CPU autocast
(`labeler.models.precision.cpu_autocast`): the same code, its matmuls in bfloat16, its results float32,
finite and within the mask contract; outside the stand-in the CPU stays float32."""

from __future__ import annotations

import numpy as np
import torch

from data_schema.backends import Sam3Config
from labeler.models.precision import cpu_autocast
from labeler.segment.base import Masks
from labeler.segment.sam2_amg import Sam2MaskBackend
from labeler.segment.sam3 import Sam3MaskBackend
from labeler.testing.sam2_tiny import tiny_sam2_config
from labeler.testing.scenes import object_scene
from tests.conftest import layer_output_dtypes


def _contract(out: Masks, shape: tuple[int, int]) -> None:
    assert len(out) > 0
    assert out.masks.dtype == np.bool_ and out.masks.shape[1:] == shape
    assert out.scores.dtype == np.float32 and np.all(np.isfinite(out.scores))
    assert np.all((out.scores >= 0) & (out.scores <= 1)) and np.all(np.diff(out.scores) <= 0)
    assert out.stability.dtype == np.float32 and np.all(np.isfinite(out.stability))
    assert out.masks.reshape(len(out), -1).any(1).all()  # empty masks are dropped


def test_sam2_bf16_body_runs_on_the_cpu(tiny_sam2):
    image = object_scene().left
    with cpu_autocast():
        backend = Sam2MaskBackend(tiny_sam2_config(tiny_sam2))  # mixed_precision=True: the default
        with layer_output_dtypes() as seen:
            out = backend.masks(image)
    assert backend._loaded().amp
    assert set(seen) == {torch.bfloat16}  # every linear / conv of the encoder and decoder
    _contract(out, image.shape[:2])
    plain = Sam2MaskBackend(tiny_sam2_config(tiny_sam2))
    with layer_output_dtypes() as seen:
        ref = plain.masks(image)
    assert not plain._loaded().amp and set(seen) == {torch.float32}
    # bf16 moves the random model's logits a little; the masks it finds are largely the same ones
    assert abs(len(out) - len(ref)) <= max(2, len(ref) // 4)


def test_sam3_bf16_body_runs_on_the_cpu(tiny_sam3):
    arch, checkpoint = tiny_sam3
    config = Sam3Config(
        checkpoint=checkpoint, arch=str(arch), classes=("person", "forklift"), confidence_threshold=0.27
    )
    image = object_scene(seed=3).left
    with cpu_autocast():
        backend = Sam3MaskBackend(config)
        with layer_output_dtypes() as seen:
            out = backend.masks(image)
    assert backend._loaded().amp
    assert torch.bfloat16 in seen and seen.count(torch.bfloat16) > 0.9 * len(seen)
    _contract(out, image.shape[:2])
    assert set(out.class_names) <= {"person", "forklift"}
    plain = Sam3MaskBackend(config)
    with layer_output_dtypes() as seen:
        plain.masks(image)
    assert not plain._loaded().amp and set(seen) == {torch.float32}
