"""Doubt signals against hand-made maps, the combined score's terms, and the `labeler doubt` pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from labeler import doubt, open_dataset
from labeler.dataset.sidecars import read_doubt_pass
from labeler.dataset.validate import validate_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.train.conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.getbasetemp())


def test_thickness_and_edge_alignment_of_hand_made_masks():
    ids = np.zeros((60, 80), np.uint16)
    ids[10:30, 10:40] = 1  # a 20 x 30 box standing in front (its own depth)
    ids[40:43, 5:75] = 2  # a 3 px strip painted on the wall (no depth edge)
    ids[50, :] = 3  # a 1 px line
    depth = np.full(ids.shape, 4.0, np.float32)
    depth[10:30, 10:40] = 2.0
    got = doubt.shape_signals(ids, depth)
    assert got[1] == (pytest.approx(19.0, abs=0.5), 1.0)  # 2 x 9 + 1: the box's middle is 9-10 px inside
    assert got[2] == (pytest.approx(3.0), 0.0)  # no outline pixel lies on a depth edge
    assert got[3][0] == 1.0
    depth[:] = np.nan
    assert doubt.shape_signals(ids, depth)[1][1] is None  # no depth on the outline: no alignment


def test_depth_edges_of_a_hole_on_the_image_border_without_overflow():
    """The Motorcycle pair has no depth in its left columns: erode's FLT_MAX padding met them there and
    `lo * 1.05` overflowed. The hole's rim is an edge, the wall's 2 m -> 3 m step is one, flat wall is not."""
    import warnings

    depth = np.full((40, 60), 3.0, np.float32)
    depth[:, 30:] = 2.0
    depth[:, :6] = np.nan  # the invalid border
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        edges, seen = doubt.depth_edges(depth)
        doubt.shape_signals(np.ones(depth.shape, np.uint16), depth)
    assert edges[:, 5:7].all() and not edges[:, :4].any() and not seen[:, :4].any()
    assert edges[:, 29:31].all() and not edges[:, 8:28].any() and not edges[:, 32:].any()


def test_normals_agree_on_the_same_plane_and_disagree_on_a_tilted_one():
    h, w = 48, 64
    k = (60.0, 60.0, 32.0, 24.0)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = np.full((h, w), 3.0, np.float32)
    # a plane sloping 45 degrees about the vertical axis: z = z0 / (1 - x/z), x = (u - cx) z / fx
    slope = (3.0 / (1 + (u - k[2]) / k[0])).astype(np.float32)
    ids = np.zeros((h, w), np.uint16)
    ids[10:30, 10:30] = 1
    same, per = doubt.normal_disagreement(wall, wall * 1.7, ids, k)  # scale does not change normals
    assert same == 0.0 and per == {1: 0.0}
    tilted, per = doubt.normal_disagreement(wall, slope, ids, k)
    assert tilted > 0.95 and per[1] == 1.0


def test_inverse_depth_is_aligned_to_the_disparity():
    rng = np.random.default_rng(0)
    disp = rng.uniform(5, 40, (30, 40)).astype(np.float32)
    rel = (disp - 3.0) / 2.5
    rel[0, 0] = np.nan
    aligned = doubt.align_inverse_depth(rel, disp)
    np.testing.assert_allclose(aligned[1:], disp[1:], rtol=1e-4)
    assert doubt.align_inverse_depth(rel[:5, :5], disp[:5, :5]) is None  # too few pixels to fit


def test_temporal_instability_of_static_pixels():
    rng = np.random.default_rng(1)
    left = rng.integers(0, 255, (40, 50, 3)).astype(np.uint8)
    depth = np.full((40, 50), 2.0, np.float32)
    assert doubt.temporal_instability(left, depth, left, depth) == 0.0
    assert doubt.temporal_instability(left, depth, left, depth * 1.1) == pytest.approx(0.1, rel=1e-5)
    ramp = np.repeat(np.linspace(0, 250, 50, dtype=np.float32)[None, :, None], 40, 0).repeat(3, 2)
    ramp = ramp.astype(np.uint8)
    moved = np.roll(ramp, 7, axis=1)  # a panning camera: nothing is static
    assert doubt.temporal_instability(ramp, depth, moved, depth) is None


def test_video_neighbours_are_the_previous_frame_of_the_same_video():
    ids = ["cam_f000010", "cam_f000000", "cam_f000020", "other_f000005", "still"]
    assert doubt.video_neighbours(ids) == {
        "cam_f000000": "cam_f000010",
        "cam_f000010": "cam_f000000",
        "cam_f000020": "cam_f000010",
    }


def test_combined_score_terms():
    objects = pa.table(
        {
            "row": [0, 0, 1],
            "area_px": [50_000, 100, 20_000],
            "depth_m_p10": [2.0, 2.0, 1.0],
            "depth_m_p90": [2.0, 2.2, 1.5],
            "thickness_px": [200.0, 4.0, 80.0],
            "edge_alignment": [1.0, 0.5, None],
            "valid_fraction": [1.0, 0.8, 0.9],
            "mono_disagreement": [None, None, None],
        }
    )
    terms = doubt.object_terms(objects, image_px=100_000)
    np.testing.assert_allclose(terms["spread"], [0.0, np.log(1.1) / np.log(1.5), 1.0])
    np.testing.assert_allclose(terms["shape"], [0.0, max(1 - 100 / 500, 1 - 3 / 15), 0.0])
    np.testing.assert_allclose(terms["edges"], [0.0, 0.5, np.nan])
    per_object = doubt.object_doubt(objects, image_px=100_000)
    np.testing.assert_allclose(per_object[2], np.mean([1.0, 0.0, 0.1]))  # absent terms drop out
    samples = pa.table(
        {
            "row": [0, 1, 2],
            "confidence_mean": [0.9, 0.5, None],
            "valid_depth_fraction": [1.0, 0.6, None],
            "temporal_instability": [None, 0.1, None],
        }
    )
    score = doubt.sample_doubt(samples, objects, image_px=100_000)
    np.testing.assert_allclose(score[0], np.mean([0.1, 0.0, per_object[:2].max()]))
    np.testing.assert_allclose(score[1], np.mean([0.5, 0.4, 1.0, per_object[2]]))
    assert np.isnan(score[2])  # a failed sample has nothing to doubt


def test_a_track_whose_depth_jumps_is_flagged_and_a_smooth_one_is_not():
    """Track 1 walks 3.0 -> 2.0 m at 1 m/s over five frames 0.2 s apart; track 2 holds 2.0 m and then jumps
    to 4.0 m (its mask went onto the wall). Track 2 is not in rows 3-5 (lost, or still frames the run
    skipped): its frames at 0.4 s and 1.2 s are consecutive labelled frames, 0.8 s apart, and the rate is
    over that gap. An untracked object and a track seen once have no signal."""
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    samples = pa.table({"row": list(range(7)), "timestamp_s": times})
    walk = [(r, 1, 3.0 - 1.0 * times[r]) for r in (0, 1, 2, 3, 4)]
    jump = [(0, 2, 2.0), (2, 2, 2.0), (6, 2, 4.0), (6, 3, 1.0), (1, None, 5.0)]
    rows, tracks, depths = zip(*(walk + jump), strict=True)
    objects = pa.table({"row": rows, "track_id": pa.array(tracks, pa.int64()), "depth_m_median": depths})
    got = doubt.with_track_jumps(samples, objects).column(doubt.TRACK_JUMP).to_pylist()
    smooth = [
        np.log(3.0 / 2.8) / 0.2,
        np.log(2.8 / 2.6) / 0.2,
        np.log(2.6 / 2.4) / 0.2,
        np.log(2.4 / 2.2) / 0.2,
    ]
    expect = [smooth[0], *np.maximum(smooth[:-1], smooth[1:]), smooth[-1]]
    expect += [0.0, np.log(2.0) / 0.8, np.log(2.0) / 0.8, None, None]
    assert got[:5] == pytest.approx(expect[:5]) and got[5:8] == pytest.approx(expect[5:8])
    assert got[8:] == [None, None]
    objects = doubt.with_track_jumps(samples, objects)
    flags = {t: j >= doubt.TRACK_JUMP_FULL for t, j in doubt.track_jumps(objects).items()}
    assert flags == {1: False, 2: False}  # 0.87 /s: a 2 -> 4 m jump over 0.8 s is still under the bar
    fast = objects.drop_columns([doubt.TRACK_JUMP]).set_column(
        0, "row", pa.array([0, 1, 2, 3, 4, 0, 2, 3, 6, 1])
    )  # the jump now between frames 0.2 s apart: ln 2 / 0.2 = 3.5 /s
    jumps = doubt.track_jumps(doubt.with_track_jumps(samples, fast))
    assert jumps[2] == pytest.approx(np.log(2.0) / 0.2) and jumps[2] >= doubt.TRACK_JUMP_FULL
    assert jumps[1] < doubt.TRACK_JUMP_FULL
    terms = doubt.object_terms(doubt.with_track_jumps(samples, fast), image_px=100_000)
    assert terms["jump"][7] == 1.0 and terms["jump"][0] == pytest.approx(smooth[0] / doubt.TRACK_JUMP_FULL)
    assert np.isnan(terms["jump"][9])  # untracked: the term drops out of the object's mean


def test_track_jump_frames_closer_than_the_floor_count_as_its_gap():
    """At 60 fps a 3% wobble is stereo noise, not a jump: the gap is floored at TRACK_MIN_GAP_S."""
    got = doubt.track_depth_jumps(np.array([1.0, 1.0]), np.array([0.0, 1 / 60]), np.array([2.0, 2.06]))
    assert got == pytest.approx([np.log(1.03) / doubt.TRACK_MIN_GAP_S] * 2)


def test_labelled_objects_carry_shape_signals_and_validate_recomputes_them(tiny):
    ds = open_dataset(tiny)
    t = ds.objects.to_table(columns=["thickness_px", "edge_alignment"])
    assert t.num_rows and t.column("thickness_px").null_count == 0
    s = ds[0]
    fresh = doubt.shape_signals(s.instance_ids, s.depth_m)
    assert [(o.thickness_px, o.edge_alignment) for o in s.objects] == [fresh[o.id] for o in s.objects]


class _ExactMono:
    """A monocular model that sees exactly the stereo depth (metric): disagreement must be 0."""

    name = "test:stereo-depth"
    kind = "metric"

    def __init__(self, ds) -> None:
        self.depth = {
            ds.read(i, ("left",))["left"].tobytes(): ds.read(i, ("depth_m",))["depth_m"]
            for i in range(len(ds))
        }

    def predict_many(self, images):
        return [self.depth[im.tobytes()] for im in images]


def test_doubt_pass_adds_signals_keeps_the_version_and_stays_valid(tiny, tmp_path):
    path = tmp_path / "ds"
    shutil.copytree(tiny, path)
    before = open_dataset(path)
    from labeler.review.doubt_pass import run_doubt

    rec = run_doubt(path, model=_ExactMono(before))
    after = open_dataset(path)
    assert after.version == before.version and rec.dataset_version == before.version
    assert rec.n_mono == len(after) and rec.n_shards_rewritten == len(after.entries)
    mono = after.samples.to_table(columns=["mono_disagreement"]).column("mono_disagreement").to_pylist()
    assert mono == [0.0] * len(after)
    assert validate_dataset(path) == []
    assert read_doubt_pass(path) == rec
    again = run_doubt(path, model=_ExactMono(after))  # same signals: nothing to rewrite
    assert again.n_shards_rewritten == 0


def test_doubt_pass_gives_video_frames_temporal_instability(tmp_path):
    from data_schema.commands import PseudoLabelConfig
    from labeler.io import write_png
    from labeler.review.doubt_pass import run_doubt
    from labeler.testing.scenes import box_pair
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml

    pair = box_pair(np.random.default_rng(4), 96, 64)
    for i in range(3):  # a still camera: three identical frames of one "video"
        write_png(tmp_path / "rect" / "left" / f"cam_f{i:06d}.png", pair.left)
        write_png(tmp_path / "rect" / "right" / f"cam_f{i:06d}.png", pair.right)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 96, 64)
    cfg = PseudoLabelConfig(
        inputs=tmp_path / "rect",
        calib=calib,
        out=tmp_path / "ds",
        scheduler="sync",
        progress=False,
        previews=False,
    )
    run_pseudo_label(cfg)
    rec = run_doubt(tmp_path / "ds")
    assert rec.n_temporal == 3 and rec.model is None and rec.n_mono == 0
    t = open_dataset(tmp_path / "ds").samples.to_table(columns=["temporal_instability"])
    assert t.column("temporal_instability").to_pylist() == [0.0, 0.0, 0.0]
    assert validate_dataset(tmp_path / "ds") == []


def test_depth_anything_branch_of_a_foundation_stereo_checkpoint(tmp_path_factory):
    """The DAv2 branch loads strictly from a release checkpoint and gives one map per image, input size."""
    from labeler.review.mono import DepthAnythingMono
    from tests.conftest import foundation_stereo_release

    model = DepthAnythingMono(foundation_stereo_release(tmp_path_factory.getbasetemp()))
    images = [np.random.default_rng(i).integers(0, 255, (50, 70, 3)).astype(np.uint8) for i in range(2)]
    out = model.predict_many(images)
    assert [o.shape for o in out] == [(50, 70), (50, 70)] and all(o.dtype == np.float32 for o in out)
    assert all(np.isfinite(o).all() and (o >= 0).all() for o in out)  # relu output: inverse depth
    assert not np.array_equal(out[0], out[1])


def test_max_per_id_equals_maximum_at():
    """The sort-based per-id maximum gives np.maximum.at's result, ids without positive values 0."""
    from labeler.doubt import max_per_id

    rng = np.random.default_rng(3)
    ids = rng.integers(0, 9, 5000).astype(np.uint16)
    values = rng.random(5000).astype(np.float32) * (rng.random(5000) > 0.3)
    values[ids == 7] = 0  # an id with no positive value
    expected = np.zeros(10, np.float64)
    np.maximum.at(expected, ids, values)
    got = max_per_id(ids, values, 9)
    assert got.dtype == np.float64 and got.shape == (10,)
    np.testing.assert_array_equal(got, expected)
    assert got[7] == 0 and got[9] == 0
