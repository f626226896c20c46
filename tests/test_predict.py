"""`labeler predict` on a tiny trained run: output shapes, the JSON schema, layouts, the stereo comparison."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.train.conftest import make_tiny_run, torch_threads

LINE = re.compile(r"^\S+\.png: (no objects.*|(object \d+ (at \d+\.\d\d m|\(no depth\))(, )?)+)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def inputs(run, tmp_path_factory):
    """A mono image, a side-by-side frame and a rectified-pairs folder made from the tiny dataset's pairs."""
    from labeler.io import read_rgb, write_png

    pairs = run.parent / "heads-tiny-dataset" / "pairs"
    root = tmp_path_factory.mktemp("predict-inputs")
    left, right = read_rgb(pairs / "left" / "pair_000.png"), read_rgb(pairs / "right" / "pair_000.png")
    write_png(root / "mono" / "frame_0001.png", left)
    write_png(root / "mono" / "frame_0002.png", np.hstack([left, right]))  # 256x96: side-by-side
    return root, pairs


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_predict_folder_shapes_and_schema(run, inputs, tmp_path):
    from data_schema.commands import PredictConfig
    from labeler.predict import ImagePrediction, PredictionSet, predict_images, summary_line

    root, _ = inputs
    res = predict_images(PredictConfig(inputs=root / "mono", run=run, out=tmp_path))
    assert [p.layout for p in res.images] == ["mono", "side-by-side"]
    for p in res.images:
        assert (p.width, p.height) == (128, 96)  # the side-by-side frame's left half
        depth = np.load(p.depth_path)
        assert depth.shape == (96, 128) and depth.dtype == np.float32
        assert np.all((depth > 0) & (depth < 10.0))  # bounded by the run's --max-depth-m
        import cv2

        ids = cv2.imread(p.ids_path, cv2.IMREAD_UNCHANGED)
        assert ids.shape == (96, 128) and ids.dtype == np.uint16
        assert sorted(o.id for o in p.objects) == list(range(1, int(ids.max()) + 1))
        for o in p.objects:
            assert o.area_px == int((ids == o.id).sum()) and 0 < o.depth_m_median < 10
        again = ImagePrediction.model_validate_json(
            (tmp_path / f"{p.image.split('/')[-1][:-4]}.json").read_text()
        )
        assert again == p
        assert LINE.match(summary_line(p)), summary_line(p)
        overlay = cv2.imread(p.overlay_path)
        assert overlay.shape[0] >= 240 and overlay.shape[1] > 2 * overlay.shape[0]
    assert PredictionSet.model_validate_json((tmp_path / "predictions.json").read_text()) == res
    assert res.images[0].stereo is None and res.images[0].weights.startswith("random-init")


def test_predict_pairs_with_calibration_reports_stereo(run, inputs, tmp_path, monkeypatch):
    """The stereo reference is the scene's depth; the reported comparison and each object's stereo median
    are those of the saved prediction against it (the tiny model finds no instances: the box it would
    find is put in its place)."""
    import dataclasses

    from data_schema.commands import PredictConfig
    from labeler.predict import predict_images
    from labeler.train.heads.predictor import HeadsPredictor

    box = np.zeros((96, 128), np.uint16)
    box[96 // 4 : 96 // 4 + 96 // 2, 128 // 3 : 2 * 128 // 3] = 1  # where box_pair draws the box
    predict = HeadsPredictor.predict
    monkeypatch.setattr(
        HeadsPredictor,
        "predict",
        lambda self, rgb: dataclasses.replace(predict(self, rgb), ids=box, scores=np.ones(1, np.float32)),
    )

    _, pairs = inputs
    calib = run.parent / "heads-tiny-dataset" / "calib.yaml"
    res = predict_images(PredictConfig(inputs=pairs, run=run, out=tmp_path, calib=calib))
    assert len(res.images) == 8 and all(p.layout == "pairs" for p in res.images)
    import cv2

    from labeler.io import read_rgb
    from labeler.predict import stereo_depth
    from labeler.testing.scenes import box_pair

    first = res.images[0]
    truth = box_pair(np.random.default_rng(11), 128, 96)  # pair_000 of the tiny dataset (conftest)
    left, right = (read_rgb(pairs / side / "pair_000.png") for side in ("left", "right"))
    stereo = stereo_depth(left, right, calib, z_far_m=10.0)
    for instance, depth_m in ((1, 0.1 * 300 / 16), (0, 0.1 * 300 / 6)):  # the box and the wall (fx·B/d)
        assert np.nanmedian(stereo[truth.instance_ids == instance]) == pytest.approx(depth_m, rel=0.03)
    # the reported comparison, recomputed from the saved prediction and that reference
    pred = np.load(first.depth_path)
    both = np.isfinite(stereo) & np.isfinite(pred)
    p, g = np.maximum(pred[both].astype(np.float64), 1e-6), stereo[both].astype(np.float64)
    s = first.stereo
    assert s is not None
    assert s.stereo_valid_fraction == pytest.approx(np.isfinite(stereo).mean())
    assert s.abs_rel == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-6)
    assert s.delta1 == pytest.approx(np.mean(np.maximum(p / g, g / p) < 1.25))
    assert s.median_ratio == pytest.approx(np.median(p / g), rel=1e-6)
    (obj,) = first.objects
    assert np.array_equal(cv2.imread(first.ids_path, cv2.IMREAD_UNCHANGED), box)
    assert obj.stereo_depth_m_median == pytest.approx(float(np.nanmedian(stereo[box == 1])))
    assert obj.stereo_depth_m_median == pytest.approx(0.1 * 300 / 16, rel=0.03)


def test_cli_prints_one_line_per_image(run, inputs, tmp_path):
    from labeler.cli.main import app

    root, _ = inputs
    res = CliRunner().invoke(
        app, ["predict", str(root / "mono" / "frame_0001.png"), "--run", str(run), "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    assert LINE.match(res.output.splitlines()[0]), res.output
    res = CliRunner().invoke(app, ["predict", str(root / "none"), "--run", str(run), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "no such file or folder" in res.output
    res = CliRunner().invoke(
        app, ["predict", str(root / "mono"), "--run", str(tmp_path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 1 and "no checkpoints/best.pt" in res.output
    assert json.loads((tmp_path / "predictions.json").read_text())["schema_version"] == 2


def test_a_truncated_image_fails_alone(run, inputs, tmp_path):
    """Issue 12: one truncated image in `predict` is that image's recorded failure; the rest is predicted."""
    import shutil

    from labeler.cli.main import app

    root, _ = inputs
    folder = tmp_path / "in"
    shutil.copytree(root / "mono", folder)
    good = (folder / "frame_0001.png").read_bytes()
    (folder / "frame_0000.png").write_bytes(good[: len(good) // 3])
    res = CliRunner().invoke(app, ["predict", str(folder), "--run", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "failed" in res.output and "frame_0000.png: not a readable image" in res.output
    data = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(data["images"]) == 2 and [f["image"] for f in data["failures"]] == [
        str(folder / "frame_0000.png")
    ]
