"""Rectification: identity pass-through, measured vertical offset on a known scene, bad input, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeler.io import read_rgb, write_png
from labeler.rig.rectify import RectifyMaps, rectify_folder, rectify_pair, vertical_offset_px
from tests.conftest import identity_calibration_yaml


def test_identity_rectification_passes_pixels_through(tmp_path):
    calib = identity_calibration_yaml(tmp_path / "id.yaml", 320, 240)
    rng = np.random.default_rng(1)
    left, right = (rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(2))
    write_png(tmp_path / "raw" / "a_left.png", left)
    write_png(tmp_path / "raw" / "a_right.png", right)
    res = rectify_folder(tmp_path / "raw", calib_path=calib, out=tmp_path / "out", progress=False)
    assert [p.status for p in res.pairs] == ["ok"]
    assert np.array_equal(read_rgb(tmp_path / "out" / "left" / "a.png"), left)
    assert np.array_equal(read_rgb(tmp_path / "out" / "right" / "a.png"), right)


def test_known_scene_is_rectified(calibrated, demo_dir):
    """Demo scenes through the estimated calibration: matched features sit on the same row."""
    _, calib_path = calibrated
    out = demo_dir / "rectified"
    res = rectify_folder(demo_dir / "scenes", calib_path=calib_path, out=out, progress=False)
    assert [p.status for p in res.pairs] == ["ok", "ok"]
    for p in res.pairs:
        assert p.vertical_offset_px is not None and p.vertical_offset_px < 0.3
        assert p.n_matches > 100
    # the raw pair is far from rectified: the measure does see misalignment
    from labeler.rig.captures import discover_pairs, load_pair

    raw = load_pair(discover_pairs(demo_dir / "scenes")[0])
    dy_raw, _ = vertical_offset_px(*raw)
    assert dy_raw > 1.0


def test_vertical_offset_measures_a_known_shift():
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (3, 3), 0)
    shifted = np.roll(base, (3, -12), axis=(0, 1))  # 3 px down, 12 px disparity
    dy, n = vertical_offset_px(base, shifted)
    assert n > 50 and abs(dy - 3.0) < 0.2


def test_bad_pairs_are_recorded_and_the_run_goes_on(calibrated, demo_dir, tmp_path):
    _, calib_path = calibrated
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "scene_000.png").write_bytes((demo_dir / "scenes" / "scene_000.png").read_bytes())
    (raw / "broken.png").write_bytes(b"junk")
    write_png(raw / "small.png", np.zeros((240, 640, 3), np.uint8))
    write_png(raw / "odd.png", np.zeros((480, 1279, 3), np.uint8))
    res = rectify_folder(raw, calib_path=calib_path, out=tmp_path / "out", progress=False)
    status = {p.pair_id: (p.status, p.error) for p in res.pairs}
    assert status["scene_000"][0] == "ok"
    assert "not a readable image" in status["broken"][1]
    assert "frame size 320x240 per eye does not match the calibration's 640x480" in status["small"][1]
    assert "odd width 1279" in status["odd"][1]
    assert all("\n" not in (e or "") for _, e in status.values())
    saved = json.loads((tmp_path / "out" / "pairs.json").read_text())
    assert len(saved["pairs"]) == 4


def test_rerun_resumes_and_redoes_damaged_outputs(calibrated, demo_dir, tmp_path, monkeypatch):
    _, calib_path = calibrated
    out = tmp_path / "out"
    first = rectify_folder(demo_dir / "scenes", calib_path=calib_path, out=out, progress=False)
    (out / "left" / "scene_001.png").write_bytes(b"damaged")
    calls = []
    import labeler.rig.rectify as rect

    real = rect.rectify_sources
    monkeypatch.setattr(
        rect,
        "rectify_sources",
        lambda srcs, *a, **k: calls.extend(s.pair_id for s in srcs) or real(srcs, *a, **k),
    )
    second = rectify_folder(demo_dir / "scenes", calib_path=calib_path, out=out, progress=False)
    assert calls == ["scene_001"]
    assert second == first
    assert sorted(p.name for p in (out / "left").iterdir()) == ["scene_000.png", "scene_001.png"]


def test_maps_are_identity_only_for_identity(calibrated, tmp_path):
    from labeler.rig.calibration import load_calibration

    assert RectifyMaps.from_calibration(
        load_calibration(identity_calibration_yaml(tmp_path / "i.yaml", 320, 240))
    ).identity
    assert not RectifyMaps.from_calibration(calibrated[0].calibration).identity


def test_rectify_pair_output_shape(calibrated):
    maps = RectifyMaps.from_calibration(calibrated[0].calibration)
    img = np.zeros((480, 640, 3), np.uint8)
    left, right = rectify_pair(img, img, maps)
    assert left.shape == right.shape == (480, 640, 3) and left.dtype == np.uint8


@pytest.mark.parametrize("layout", ["pairs", "suffix"])
def test_input_layouts(tmp_path, layout):
    from labeler.rig.captures import discover_pairs, load_pair

    a, b = np.zeros((4, 6, 3), np.uint8), np.ones((4, 6, 3), np.uint8)
    if layout == "pairs":
        write_png(tmp_path / "left" / "x1.png", a)
        write_png(tmp_path / "right" / "x1.png", b)
    else:
        write_png(tmp_path / "x1_left.png", a)
        write_png(tmp_path / "x1_right.png", b)
    (src,) = discover_pairs(tmp_path)
    assert src.layout.value == layout and src.pair_id == "x1"
    left, right = load_pair(src)
    assert np.array_equal(left, a) and np.array_equal(right, b)


def test_orphan_frame_is_named(tmp_path):
    from labeler.errors import InputError
    from labeler.rig.captures import discover_pairs

    write_png(tmp_path / "left" / "x1.png", np.zeros((4, 6, 3), np.uint8))
    (tmp_path / "right").mkdir()
    with pytest.raises(InputError, match=r"right/x1\.png: missing"):
        discover_pairs(tmp_path)
