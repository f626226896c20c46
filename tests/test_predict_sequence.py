"""`labeler predict` on a sequence (issue 23, scope 4): the demo's rendered video decoded once in frame order,
each frame predicted by the tiny random-weight heads, objects linked over frames by the tracker of
`labeler run --track`, a tracks summary; a timestamped folder with a missing frame; a truncated video."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_schema.commands import PredictConfig
from data_schema.manifest import TrackingConfig
from data_schema.predictions import PredictionSet
from tests.train.conftest import make_tiny_run, torch_threads

W, H, N_FRAMES, STILL = 128, 96, 10, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The demo sequence at 128x96 per eye (walk.avi, side-by-side MJPG), its truth, its frames decoded."""
    import cv2

    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence

    root = tmp_path_factory.mktemp("predict-sequence")
    rig = SyntheticRig.rectified(W, H, focal_px=0.78 * W)
    truth = write_demo_sequence(root / "demo", rig, n_frames=N_FRAMES, still_frames=STILL)
    video = root / "demo" / "sequence" / "walk.avi"
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    true = [np.load(root / "demo" / "truth" / "sequence" / f"frame_{k:06d}.npz") for k in range(N_FRAMES)]
    return video, truth, frames, [(t["instance_ids"], t["depth_m"]) for t in true]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _truth_predictor(monkeypatch, scene, seen: list[np.ndarray]):
    """The heads' prediction with the rendered truth's instances and depth in place of the tiny model's
    (a random model finds no instances); the frames it is shown are kept, in order."""
    from labeler.train.heads.predictor import HeadsPredictor

    _, _, _, true = scene
    predict = HeadsPredictor.predict

    def with_truth(self, rgb):
        ids, depth = true[len(seen)]
        seen.append(rgb)
        k = int(ids.max())
        return dataclasses.replace(
            predict(self, rgb),
            ids=ids.astype(np.uint16),
            depth_m=depth.astype(np.float32),
            scores=np.ones(k, np.float32),
        )

    monkeypatch.setattr(HeadsPredictor, "predict", with_truth)


def test_still_frames_of_a_video_are_skipped_without_model_time(run, scene, tmp_path, monkeypatch):
    """As `labeler run`: a frame nearly identical to the last one predicted is recorded as skipped (which
    frame it repeats) and never reaches the model; `--keep-duplicates` predicts every frame."""
    from labeler.predict import predict_images
    from labeler.train.heads.predictor import HeadsPredictor

    video, truth, _, _ = scene
    calls = []
    predict = HeadsPredictor.predict
    monkeypatch.setattr(HeadsPredictor, "predict", lambda self, rgb: calls.append(1) or predict(self, rgb))
    res = predict_images(PredictConfig(inputs=video, run=run, out=tmp_path / "a"))
    still = [f.frame for f in truth.frames if f.still]
    assert len(still) == STILL and [s.frame_index for s in res.skipped] == still
    assert all(s.duplicate_of_frame == still[0] - 1 for s in res.skipped)  # the frame before the stretch
    assert [p.frame_index for p in res.images] == [k for k in range(N_FRAMES) if k not in still]
    assert len(calls) == N_FRAMES - STILL
    assert PredictionSet.model_validate_json((tmp_path / "a" / "predictions.json").read_text()) == res
    calls.clear()
    every = predict_images(PredictConfig(inputs=video, run=run, out=tmp_path / "b", keep_duplicates=True))
    assert len(every.images) == len(calls) == N_FRAMES and every.skipped == []


def test_a_video_is_decoded_once_in_order_and_its_objects_tracked(run, scene, tmp_path, monkeypatch):
    import cv2

    import labeler.rig.captures as captures
    from labeler.predict import predict_images, track_line

    video, truth, frames, true = scene
    calls = []
    decode = captures.read_video_frames
    monkeypatch.setattr(
        captures, "read_video_frames", lambda v, idx: calls.append(list(idx)) or decode(v, idx)
    )
    seen: list[np.ndarray] = []
    _truth_predictor(monkeypatch, scene, seen)
    res = predict_images(PredictConfig(inputs=video, run=run, out=tmp_path, keep_duplicates=True))
    assert calls == [list(range(N_FRAMES))]  # one decode pass over the video
    assert len(seen) == N_FRAMES  # the left halves of the video's frames, in order
    assert all(np.array_equal(s, f[:, :W]) for s, f in zip(seen, frames, strict=True))
    assert [p.frame_index for p in res.images] == list(range(N_FRAMES)) and not res.failures
    assert [p.timestamp_s for p in res.images] == pytest.approx([k / truth.fps for k in range(N_FRAMES)])
    assert {p.sequence for p in res.images} == {"walk"} and {p.layout for p in res.images} == {"side-by-side"}
    for k, p in enumerate(res.images):
        assert p.image == str(video) and (p.width, p.height) == (W, H)
        depth = np.load(p.depth_path)
        assert depth.shape == (H, W) and depth.dtype == np.float32
        ids = cv2.imread(p.ids_path, cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and np.array_equal(ids, true[k][0])
        assert Path(p.ids_path).name == f"walk_f{k:06d}_ids.png"
    # each true object is one track over all its frames, and each track one true object
    track_of: dict[int, set[int]] = {}
    frames_of: dict[int, int] = {}
    for p in res.images:
        for o in p.objects:
            assert o.track_id is not None
            track_of.setdefault(o.id, set()).add(o.track_id)
            frames_of[o.track_id] = frames_of.get(o.track_id, 0) + 1
    assert all(len(t) == 1 for t in track_of.values()), track_of
    assert len({next(iter(t)) for t in track_of.values()}) == len(track_of) >= 3
    standing = next(iter(track_of[4]))  # object 4 stands still in every frame
    assert frames_of[standing] == N_FRAMES
    assert {t.track_id: t.frames_seen for t in res.tracks} == frames_of
    walker = next(t for t in res.tracks if t.track_id == next(iter(track_of[1])))
    first, last = (float(np.median(true[f][1][true[f][0] == 1])) for f in (0, N_FRAMES - 1))
    assert (walker.depth_m_first, walker.depth_m_last) == pytest.approx((first, last), rel=1e-5)
    assert walker.approach_speed_m_s == pytest.approx((first - last) / ((N_FRAMES - 1) / truth.fps))
    line = track_line(walker)
    assert re.fullmatch(
        rf"walk: object {walker.track_id} at {first:.2f} m … {last:.2f} m, approaching \d\.\d\d m/s "
        rf"\(frames 0-{N_FRAMES - 1}, {N_FRAMES} seen\)",
        line,
    ), line
    assert PredictionSet.model_validate_json((tmp_path / "predictions.json").read_text()) == res


def test_cli_on_a_video_with_a_stride_and_a_truncated_copy(run, scene, tmp_path):
    """The tiny model unpatched (random weights: shapes and dtypes, no objects); a truncated video's
    missing frames are one failure line each, the frames before them predicted."""
    import cv2

    from labeler.cli.main import app

    video, _, _, _ = scene
    res = CliRunner().invoke(app, ["predict", str(video), "--run", str(run), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    data = PredictionSet.model_validate_json((tmp_path / "a" / "predictions.json").read_text())
    assert (
        len(data.images) == N_FRAMES - STILL
        and len(data.skipped) == STILL
        and data.tracking == TrackingConfig()
    )
    last = res.output.splitlines()[-1]
    assert last.startswith(
        f"{N_FRAMES - STILL} frames, {STILL} still frames skipped, {len(data.tracks)} tracks -> "
    )
    res = CliRunner().invoke(
        app, ["predict", str(video), "--run", str(run), "--out", str(tmp_path / "b"), "--stride", "3"]
    )
    assert res.exit_code == 0, res.output
    data = PredictionSet.model_validate_json((tmp_path / "b" / "predictions.json").read_text())
    assert [p.frame_index for p in data.images] == [0, 3, 6, 9]
    for p in data.images:
        depth = np.load(p.depth_path)
        assert depth.shape == (H, W) and depth.dtype == np.float32 and np.all((depth > 0) & (depth < 10))
        ids = cv2.imread(p.ids_path, cv2.IMREAD_UNCHANGED)
        assert ids.shape == (H, W) and ids.dtype == np.uint16
        assert all(o.track_id is not None for o in p.objects)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    res = CliRunner().invoke(
        app, ["predict", str(cut), "--run", str(run), "--out", str(tmp_path / "c"), "--keep-duplicates"]
    )
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    data = PredictionSet.model_validate_json((tmp_path / "c" / "predictions.json").read_text())
    done, failed = [p.frame_index for p in data.images], [f.image for f in data.failures]
    assert done and failed and len(done) + len(failed) == N_FRAMES
    assert done == list(range(len(done)))
    lines = [ln for ln in res.output.splitlines() if ln.startswith("failed ")]
    assert len(lines) == len(failed) and all("cannot be decoded" in ln for ln in lines)


@pytest.mark.parametrize(("max_gap", "one_track"), [(15, True), (1, False)])
def test_a_timestamped_folder_with_a_missing_frame(run, scene, tmp_path, monkeypatch, max_gap, one_track):
    """Frames named by their capture time, frame 3 missing: the frame numbers skip it; the standing
    object keeps its track over the gap when it is within --track-max-gap-frames, else starts a new one."""
    from labeler.io import write_png
    from labeler.predict import predict_images

    _, _, frames, true = scene
    folder = tmp_path / "stamped"
    kept = [k for k in range(6) if k != 3]
    for k in kept:
        write_png(folder / f"{1700000000.0 + 0.1 * k:.3f}.png", frames[k])
    seen: list[np.ndarray] = []
    _truth_predictor(monkeypatch, (None, None, None, [true[k] for k in kept]), seen)
    res = predict_images(
        PredictConfig(
            inputs=folder,
            run=run,
            out=tmp_path / "out",
            tracking=TrackingConfig(max_gap_frames=max_gap),
            keep_duplicates=True,  # frame 5 repeats frame 4 (the still stretch): this test is about the gap
        )
    )
    assert [p.frame_index for p in res.images] == kept
    assert all(np.array_equal(s, frames[k][:, :W]) for s, k in zip(seen, kept, strict=True))
    standing = [next(o.track_id for o in p.objects if o.id == 4) for p in res.images]
    assert len(set(standing[:3])) == 1 and len(set(standing[3:])) == 1
    assert (standing[0] == standing[3]) is one_track
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["schema_version"] == 2


def test_a_folder_of_plain_images_is_not_a_sequence(run, scene, tmp_path):
    from labeler.io import write_png
    from labeler.predict import discover_sequence

    _, _, frames, _ = scene
    for k in range(2):
        write_png(tmp_path / f"frame_{k:04d}.png", frames[k])
    assert discover_sequence(tmp_path, "auto", 1) is None
    shutil.copy(scene[0], tmp_path / "walk.avi")  # images beside a video: still images
    assert discover_sequence(tmp_path, "auto", 1) is None
