"""Issue 13: what a mask needs to be an object, for every backend: area, valid depth; counted, not lost."""

from __future__ import annotations

import numpy as np

from data_schema.manifest import ObjectPolicy
from labeler.depth import apply_object_policy, object_records


def test_small_and_depthless_masks_are_turned_away_and_counted():
    ids = np.zeros((40, 40), np.uint16)
    ids[0:20, 0:20] = 1  # 400 px, all valid: an object
    ids[30:33, 30:33] = 2  # 9 px: too small
    ids[20:40, 0:10] = 3  # 200 px, a border sliver with no valid depth
    depth = np.full((40, 40), 2.0, np.float32)
    depth[20:40, 0:10] = np.nan
    new, kept, dropped = apply_object_policy(ids, depth, ObjectPolicy(min_area_px=64, min_valid_fraction=0.5))
    assert kept.tolist() == [1] and dropped == 2
    assert set(np.unique(new).tolist()) == {0, 1} and (new == 1).sum() == 400


def test_ids_stay_consecutive_and_scores_follow():
    ids = np.zeros((30, 30), np.uint16)
    ids[0:10, 0:10], ids[0:2, 20:22], ids[20:30, 20:30] = 1, 2, 3
    depth = np.ones((30, 30), np.float32)
    new, kept, dropped = apply_object_policy(ids, depth, ObjectPolicy(min_area_px=50))
    assert kept.tolist() == [1, 3] and dropped == 1
    assert ((new == 2) == (ids == 3)).all()  # old id 3 is new id 2
    scores = np.array([0.9, 0.5, 0.7], np.float32)
    recs = object_records(new, depth, scores[kept - 1])
    assert [r.score for r in recs] == [np.float32(0.9), np.float32(0.7)]


def test_depth_is_never_reported_from_a_handful_of_pixels():
    ids = np.ones((10, 10), np.uint16)
    depth = np.full((10, 10), np.nan, np.float32)
    depth[0, :5] = 3.0  # 5 valid pixels
    (few,) = object_records(ids, depth, np.array([1.0], np.float32), min_depth_px=32)
    assert few.depth_m_median is None and few.valid_fraction == 0.05
    (any_,) = object_records(ids, depth, np.array([1.0], np.float32), min_depth_px=1)
    assert any_.depth_m_median == 3.0
