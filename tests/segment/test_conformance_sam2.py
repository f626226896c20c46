"""sam2 masks (the tiny random SAM2 on the CPU) against the mask conformance suite."""

from __future__ import annotations

import pytest

from labeler.segment.sam2_amg import Sam2MaskBackend
from labeler.testing.conformance import MaskBackendTests
from labeler.testing.sam2_tiny import tiny_sam2_config


class TestSam2Conformance(MaskBackendTests):
    # Random weights segment nothing in particular (their masks are speckles); finding the object is
    # checked with a released checkpoint in test_sam2_amg.py::test_released_checkpoint_finds_the_object.
    object_min_iou = 0.0

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny_sam2) -> Sam2MaskBackend:
        return Sam2MaskBackend(tiny_sam2_config(tiny_sam2))
