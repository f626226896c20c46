"""sam3 masks (the tiny SAM 3 with random weights, on the CPU) against the mask conformance suite, plus
the class name of every mask."""

from __future__ import annotations

import numpy as np
import pytest

from data_schema.backends import Sam3Config
from labeler.segment.sam3 import Sam3MaskBackend
from labeler.synthetic import RectifiedPair
from labeler.testing.conformance import MaskBackendTests, best_iou
from labeler.testing.sam3_tiny import OPEN_THRESHOLD
from labeler.testing.scenes import object_scene

CLASSES = ("person", "cardboard box")


class TestSam3RandomWeightsConformance(MaskBackendTests):
    """The tiny SAM 3's random weights with the score threshold open: 16 queries x 2 classes per image."""

    backend_name = "sam3"
    # float32 batched matrix products round differently in the last bits (one image vs three)
    many_max_mask_diff = 0.001
    many_scores_atol = 1e-4

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tiny_sam3) -> Sam3MaskBackend:
        arch, checkpoint = tiny_sam3
        config = Sam3Config(
            checkpoint=checkpoint, arch=str(arch), classes=CLASSES, confidence_threshold=OPEN_THRESHOLD
        )
        return Sam3MaskBackend(config)

    def test_finds_the_object(self, backend: Sam3MaskBackend, scene: RectifiedPair) -> None:  # type: ignore[override]
        """Random weights segment nothing in particular (no released weights can be had): here the backend
        finds the object exactly as well as the official `Sam3Processor` reading the same weights, per
        class prompt, at the same threshold."""
        from PIL import Image

        from labeler.segment.sam3_model import without_pinned_memory
        from labeler.testing.sam3_tiny import TINY, official_processor

        target = scene.instance_ids == 1
        ours = best_iou(backend.masks(scene.left).masks, target)
        processor = official_processor(
            backend.model, resolution=TINY.resolution, confidence_threshold=OPEN_THRESHOLD
        )
        with without_pinned_memory():
            state = processor.set_image(Image.fromarray(scene.left))
            masks = np.concatenate(
                [processor.set_text_prompt(c, state)["masks"][:, 0].numpy() for c in CLASSES]
            )
        assert 0 < ours == pytest.approx(best_iou(masks, target), abs=1e-3)

    def test_every_mask_has_a_class(self, backend: Sam3MaskBackend) -> None:
        out = backend.masks(object_scene().left)
        assert out.class_names is not None and len(out.class_names) == len(out) > 0
        assert set(out.class_names) == set(CLASSES)  # 16 open queries per class: both classes appear
        # per class, at most `queries` masks (one per DETR query)
        names = np.array(out.class_names)
        assert all((names == c).sum() <= 16 for c in CLASSES)
