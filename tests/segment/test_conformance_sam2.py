"""sam2 masks (the tiny SAM2 on the CPU) against the mask conformance suite, twice: with the colour
stand-in network, which finds objects, and with the tiny model's random weights as written."""

from __future__ import annotations

import numpy as np
import pytest

from data_schema.backends import Sam2Config
from labeler.segment.sam2_amg import Sam2MaskBackend
from labeler.synthetic import RectifiedPair
from labeler.testing.conformance import MaskBackendTests, best_iou
from labeler.testing.sam2_colour import use_colour_network
from labeler.testing.sam2_tiny import official_generator, tiny_sam2_config


class TestSam2Conformance(MaskBackendTests):
    """The official default thresholds (quality, stability, NMS) on an 8 x 8 point grid; the network is
    `labeler.testing.sam2_colour`'s (colour similarity around the prompted cell), so finding the object
    checks the backend's path from the point grid to the sorted masks (measured IoU 0.90; random
    weights: 0.24)."""

    backend_name = "sam2"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny_sam2) -> Sam2MaskBackend:
        config, checkpoint = tiny_sam2
        backend = Sam2MaskBackend(Sam2Config(checkpoint=checkpoint, config=str(config), points_per_side=8))
        use_colour_network(backend.model)
        return backend


class TestSam2RandomWeightsConformance(MaskBackendTests):
    """The tiny SAM2's random weights with the thresholds open: the contract over 48 overlapping masks."""

    backend_name = "sam2"
    # float32 batched convolutions round differently in the last bits (test_sam2_amg measures the same)
    many_max_mask_diff = 0.001
    many_scores_atol = 1e-4

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny_sam2) -> Sam2MaskBackend:
        return Sam2MaskBackend(tiny_sam2_config(tiny_sam2))

    def test_finds_the_object(self, backend: Sam2MaskBackend, scene: RectifiedPair) -> None:  # type: ignore[override]
        """Random weights segment nothing in particular (TestSam2Conformance's stand-in network finds the
        object): here the backend finds the object exactly as well as the official generator reading the
        same weights with the same settings."""
        target = scene.instance_ids == 1
        ours = best_iou(backend.masks(scene.left, disparity_px=scene.disparity_px).masks, target)
        records = official_generator(backend.model, backend.config).generate(scene.left)
        theirs = best_iou(np.stack([r["segmentation"] for r in records if r["area"] > 0]), target)
        assert 0 < ours == pytest.approx(theirs, abs=1e-6)
