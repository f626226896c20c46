"""classical masks against the mask conformance suite, plus what is particular to it."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from data_schema.backends import ClassicalMasksConfig
from labeler.segment.base import MASK_BACKENDS
from labeler.segment.classical import ClassicalMaskBackend
from labeler.testing.conformance import MaskBackendTests
from labeler.testing.scenes import object_scene


class TestClassicalConformance(MaskBackendTests):
    backend_name = "classical"

    @pytest.fixture(params=[{}, {"n_segments": 100, "work_max_side": 64}], ids=["default", "coarse"])
    def backend(self, request: pytest.FixtureRequest) -> ClassicalMaskBackend:
        return ClassicalMaskBackend(ClassicalMasksConfig(**request.param))


def test_registry_builds_it() -> None:
    backend = MASK_BACKENDS.get("classical")(ClassicalMasksConfig(n_segments=200))
    assert isinstance(backend, ClassicalMaskBackend) and backend.config.n_segments == 200


def test_gpu_device_is_refused() -> None:
    with pytest.raises(ValueError, match="CPU only"):
        ClassicalMaskBackend(device="cuda:0")


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ClassicalMasksConfig(n_segment=100)


def test_disparity_of_another_size_raises() -> None:
    scene = object_scene()
    with pytest.raises(ValueError, match="disparity_px must be"):
        ClassicalMaskBackend().masks(scene.left, disparity_px=scene.disparity_px[:, :-1])


def test_background_is_dropped_and_the_object_scores_highest() -> None:
    scene = object_scene()
    out = ClassicalMaskBackend().masks(scene.left, disparity_px=scene.disparity_px)
    area = out.masks.mean(axis=(1, 2))
    assert area.max() <= ClassicalMasksConfig().max_area_frac
    target = scene.instance_ids == 1
    iou = (out.masks & target).sum(axis=(1, 2)) / (out.masks | target).sum(axis=(1, 2))
    assert int(np.argmax(iou)) == 0  # the best-matching mask is the top-scored one
    assert out.scores[0] > 0.8


def test_invalid_disparity_is_tolerated() -> None:
    scene = object_scene()
    d = scene.disparity_px.copy()
    d[:, :20] = np.nan  # an invalid band, as a matcher leaves at the left edge
    d[40:44] = 0.0
    out = ClassicalMaskBackend().masks(scene.left, disparity_px=d)
    assert len(out) >= 1
    all_nan = np.full_like(d, np.nan)
    assert ClassicalMaskBackend().masks(scene.left, disparity_px=all_nan).masks.shape[1:] == d.shape
