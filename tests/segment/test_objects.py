"""Objects that are objects (issue 27): the default CPU labels (sgbm + classical) on rendered rooms.

One room of each kind (`labeler.synthetic.room_pair`, seed 7: neither the seeds the rules were developed
on nor benchmarks/bench_objects.py's held-out ones), 640 x 480, labelled as `labeler pseudo-label`
labels a pair; every reported object counts (`labeler.segment.metrics`). Before issue 27 the same kinds
scored precision ~0.43 (walls, floors, blobs and border strips reported as objects).
"""

from __future__ import annotations

import numpy as np
import pytest

from labeler.segment.classical import ClassicalMaskBackend
from labeler.segment.metrics import ObjectScores, object_scores, reported_objects
from labeler.stereo.sgbm import SgbmBackend
from labeler.synthetic import ROOM_KINDS, RectifiedPair, room_pair

W, H = 640, 480
DEPTH_PER_DISPARITY = 0.78 * W * 0.06  # focal px x baseline m of room_pair's rig


@pytest.fixture(scope="module")
def rooms() -> dict[str, RectifiedPair]:
    return {kind: room_pair(kind, 7, width=W, height=H) for kind in ROOM_KINDS}


def _label(pair: RectifiedPair, disparity: np.ndarray) -> ObjectScores:
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(disparity > 0, DEPTH_PER_DISPARITY / disparity, np.nan).astype(np.float32)
    ids, objects = reported_objects(ClassicalMaskBackend().masks(pair.left, disparity_px=disparity), depth)
    return object_scores(ids, objects, pair.instance_ids, pair.depth_m)


def test_objects_are_the_objects_with_sgbm_depth(rooms: dict[str, RectifiedPair]) -> None:
    total = ObjectScores()
    for pair in rooms.values():
        total += _label(pair, SgbmBackend().disparity(pair.left, pair.right).disparity_px)
    assert total.true == 15
    assert total.precision >= 0.85  # measured 1.000 (15 of 15)
    assert total.recall >= 0.85  # measured 1.000


def test_walls_and_floors_are_not_objects_with_true_depth(rooms: dict[str, RectifiedPair]) -> None:
    """With the exact disparity nothing but the boards is reported."""
    total = ObjectScores()
    for pair in rooms.values():
        total += _label(pair, pair.disparity_px)
    assert total.precision >= 0.9 and total.recall >= 0.9  # measured 1.000 / 1.000


def test_metrics_count_what_is_reported() -> None:
    truth = np.zeros((20, 20), np.int32)
    truth[2:10, 2:10] = 1
    depth = np.full((20, 20), 2.0, np.float32)
    ids = np.zeros((20, 20), np.uint16)
    ids[2:10, 2:10] = 1  # right
    ids[12:18, 12:18] = 2  # nothing there: wrong
    masks_scores = np.array([0.9, 0.8], np.float32)
    from labeler.depth import object_records

    objects = object_records(ids, depth, masks_scores)
    s = object_scores(ids, objects, truth, depth)
    assert (s.reported, s.right, s.found, s.true) == (2, 1, 1, 1)
    assert s.precision == 0.5 and s.recall == 1.0
    far = object_records(ids, np.where(ids == 1, 2.5, 2.0).astype(np.float32), masks_scores)
    assert object_scores(ids, far, truth, depth).right == 0  # the mask fits, the depth is 25 % off
