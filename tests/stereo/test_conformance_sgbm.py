"""sgbm against the stereo conformance suite, plus what is particular to it (search range, occlusion fill)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from data_schema.backends import SgbmConfig
from labeler.stereo.base import STEREO_BACKENDS
from labeler.stereo.consistency import fill_from_background, lr_difference, occluded, outside_right
from labeler.stereo.sgbm import OCCLUSION_TOL_PX, OUTSIDE_MARGIN_PX, SgbmBackend
from labeler.testing.conformance import StereoBackendTests
from labeler.testing.scenes import plane_pair, square_scene


class TestSgbmConformance(StereoBackendTests):
    backend_name = "sgbm"

    @pytest.fixture(
        params=[{}, {"wls": False}, {"num_disparities": 32}], ids=["default", "no-wls", "fixed-range"]
    )
    def backend(self, request: pytest.FixtureRequest) -> SgbmBackend:
        return SgbmBackend(SgbmConfig(**request.param))


def test_registry_builds_it() -> None:
    backend = STEREO_BACKENDS.get("sgbm")(SgbmConfig(block_size=5))
    assert isinstance(backend, SgbmBackend) and backend.config.block_size == 5


def test_gpu_device_is_refused() -> None:
    with pytest.raises(ValueError, match="CPU only"):
        SgbmBackend(device="cuda:0")


@pytest.mark.parametrize(
    "fields",
    [{"block_size": 4}, {"num_disparities": 40}, {"min_disparity": 8}, {"p1_per_px": 40}, {"typo": 1}],
)
def test_config_rejects(fields: dict) -> None:
    with pytest.raises(ValidationError):
        SgbmConfig(**fields)


@pytest.mark.parametrize("true_disparity", [3.0, 21.5, 40.0])
def test_search_range_covers_the_pair(true_disparity: float) -> None:
    scene = plane_pair(96, 192, disparity_px=true_disparity)
    lo, num = SgbmBackend().search_range(scene.left, scene.right)
    assert num % 16 == 0
    assert lo <= true_disparity < lo + num
    assert num <= 48  # narrow: a plane needs little more than the coarse pass's own margin


def test_left_band_is_matched() -> None:
    """Pixels left of the search range's width are matched wherever their match is inside the right image."""
    scene = plane_pair(96, 192, disparity_px=21.5)
    out = SgbmBackend().disparity(scene.left, scene.right)
    d, conf = out.disparity_px, out.confidence
    # x >= 24 > 21.5: visible in the right view, yet inside the 64 px band a fixed 0..64 range loses
    band = d[8:-8, 24:64]
    assert (conf[8:-8, 24:64] > 0).mean() > 0.95  # matched, not filled
    assert np.nanmedian(np.abs(band - 21.5)) < 0.25
    # x - d < 0: the match is outside the right image; the plane continues into it, confidence 0
    assert (conf[:, :20] == 0).all()
    assert np.median(np.abs(d[:, :20] - 21.5)) < 0.5


def test_occluded_band_takes_the_background() -> None:
    scene = square_scene(96, 128)  # square at 14 px over a plane at 5 px, square from x = 42
    out = SgbmBackend().disparity(scene.left, scene.right)
    rows = slice(30, 66)
    # the background strip just left of the square (42 - (14 - 5) .. 42) is hidden in the right view:
    # it continues the plane behind it, with confidence 0
    assert (out.confidence[rows, 35:40] == 0).mean() > 0.8
    assert np.median(np.abs(out.disparity_px[rows, 35:40] - 5.0)) < 0.5
    conf = out.confidence[rows, 55:90]  # inside the square, well matched
    assert np.nanmean(conf) > 0.8


def test_background_fill_on_a_toy_row() -> None:
    """A gap takes the farther (smaller) of the disparities that bound it; an open end takes its one side."""
    nan = np.nan
    d = np.array([[nan, nan, 5.0, 5.0, nan, nan, 9.0, 9.0, nan]], np.float32)
    hidden = np.isnan(d)
    hidden[0, 7] = True  # hidden although matched: filled too
    got = fill_from_background(d, hidden)[0]
    np.testing.assert_array_equal(got, [5, 5, 5, 5, 5, 5, 9, 9, 9])
    assert np.isnan(fill_from_background(np.full((1, 3), nan, np.float32), np.ones((1, 3), bool))).all()


def test_helpers_on_a_toy_row() -> None:
    d = np.array([[1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 1.0, np.nan]], np.float32)
    # pixels 1..2 (d = 1) land on right x 0..1; pixel 3 (d = 4) lands on -1: outside
    np.testing.assert_array_equal(
        outside_right(d, margin_px=OUTSIDE_MARGIN_PX)[0],
        [True, False, False, True, False, False, False, False],
    )
    # pixel 4 (d = 4) lands on right x 0, where pixel 1 (d = 1) lands too: pixel 1 is hidden
    hidden = occluded(d, tol_px=OCCLUSION_TOL_PX)[0]
    assert hidden[1] and hidden[2] and not hidden[4] and not hidden[7]
    same = lr_difference(d, np.full_like(d, 1.0), sampling="nearest")
    assert same[0, 1] == 0.0 and np.isnan(same[0, 0]) and np.isnan(same[0, 7])
