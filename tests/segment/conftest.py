"""The tiny random SAM2 (config + checkpoint written once per session; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config YAML, checkpoint) of the tiny SAM2 with seed-0 random weights."""
    from labeler.testing.sam2_tiny import write_tiny_sam2

    return write_tiny_sam2(tmp_path_factory.mktemp("sam2_tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(architecture JSON, checkpoint) of the tiny SAM 3 with seed-0 random weights."""
    from labeler.testing.sam3_tiny import write_tiny_sam3

    return write_tiny_sam3(tmp_path_factory.mktemp("sam3_tiny"), seed=0)
