from __future__ import annotations

import numpy as np
import pytest

from data_schema.manifest import DepthSettings
from labeler.depth import depth_to_disparity, disparity_to_depth, instance_map, object_records

SETTINGS = DepthSettings(fx_px=500.0, baseline_m=0.06, doffs_px=0.0, z_far_m=10.0)


def test_depth_formula_and_invalid_pixels():
    d = np.array([[30.0, 15.0, 0.0, -2.0], [np.nan, 2.0, 3.0, 300.0]], np.float32)
    z = disparity_to_depth(d, SETTINGS)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0, :2], [1.0, 2.0], rtol=1e-6)
    assert np.isnan(z[0, 2:]).all() and np.isnan(z[1, 0])
    assert np.isnan(z[1, 1])  # 15 m > z_far
    np.testing.assert_allclose(z[1, 2:], [10.0, 0.1], rtol=1e-6)
    back = depth_to_disparity(z, SETTINGS)
    np.testing.assert_allclose(back[np.isfinite(z)], d[np.isfinite(z)], rtol=1e-5)


def test_doffs_shifts_disparity():
    """Middlebury-style rectification: Z = f·B / (d + doffs)."""
    s = SETTINGS.model_copy(update={"doffs_px": 10.0})
    assert disparity_to_depth(np.array([[20.0]], np.float32), s)[0, 0] == pytest.approx(1.0)


def test_instance_map_resolves_overlaps_by_score_then_area():
    m = np.zeros((3, 6, 6), bool)
    m[0, :4, :4] = True  # big, score 0.5
    m[1, 2:5, 2:5] = True  # overlaps, score 0.9 → wins the overlap
    m[2, 0:2, 0:2] = True  # small, same score as the big one → wins its pixels
    m_scores = np.array([0.5, 0.9, 0.5])
    ids, source = instance_map(m, m_scores)
    assert ids.dtype == np.uint16
    assert list(source) == [1, 2, 0]  # id 1 <- mask 1, id 2 <- mask 2, id 3 <- mask 0
    assert (ids[2:5, 2:5] == 1).all() and (ids[0:2, 0:2] == 2).all()
    assert ids[0, 3] == 3 and ids[5, 5] == 0


def test_instance_map_drops_fully_hidden_masks():
    m = np.zeros((2, 4, 4), bool)
    m[0, :, :] = True
    m[1, 1:3, 1:3] = True
    ids, source = instance_map(m, np.array([0.9, 0.1]))
    assert list(source) == [0] and set(np.unique(ids)) == {1}


def test_object_records_values():
    ids = np.zeros((10, 10), np.uint16)
    ids[2:6, 3:8] = 1
    depth = np.full((10, 10), np.nan, np.float32)
    depth[2:6, 3:8] = np.linspace(1.0, 2.0, 20).reshape(4, 5)
    depth[2, 3] = np.nan
    (obj,) = object_records(ids, depth, np.array([0.8]), None)
    assert obj.id == 1 and obj.area_px == 20 and obj.bbox == [3, 2, 5, 4]
    assert obj.valid_fraction == pytest.approx(19 / 20)
    valid = depth[np.isfinite(depth)]
    assert obj.depth_m_median == pytest.approx(float(np.median(valid)))
    assert obj.depth_m_p10 == pytest.approx(float(np.percentile(valid, 10)))
    from labeler.segment.rle import decode, encode

    assert np.array_equal(decode(encode(ids == 1)), ids == 1)
