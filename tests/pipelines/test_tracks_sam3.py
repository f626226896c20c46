"""`labeler run --track --masks sam3` on the tiny random SAM 3, both ways: on the CPU (the default there)
it detects per frame and links the detections by the association every class-naming backend uses
(labeler/segment/track.py: mask IoU, depth jump, and never two classes in one track); with
`--sam3-track-with video_model` (the default with --gpu) the official SAM 3 video model follows each
class's objects (labeler/segment/sam3_video.py), here on the CPU under the test-only stand-ins of
tests/segment/sam3_video_cpu.py. Either way a track keeps one class."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from data_schema.backends import Sam3Config
from data_schema.commands import PseudoLabelConfig
from labeler import open_dataset
from labeler.dataset.tables import read_tracks
from labeler.dataset.validate import validate_dataset
from pipelines.pseudo_label import run_pseudo_label
from tests.conftest import identity_calibration_yaml

W, H, N_FRAMES = 128, 96, 6
CLASSES = ("person", "box")


def _run(tmp_path, masks: Sam3Config):
    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence

    f = 0.78 * W
    write_demo_sequence(tmp_path / "demo", SyntheticRig.rectified(W, H, focal_px=f), n_frames=N_FRAMES)
    identity_calibration_yaml(tmp_path / "calib.yaml", W, H, fx=f)
    return run_pseudo_label(
        PseudoLabelConfig(
            inputs=tmp_path / "demo" / "sequence",
            calib=tmp_path / "calib.yaml",
            out=tmp_path / "ds",
            rectify=True,
            stride=1,
            track=True,
            keep_duplicates=True,
            scheduler="sync",
            progress=False,
            previews=False,
            samples_per_shard=3,
            masks=masks,
            objects={"min_area_px": 8, "min_valid_fraction": 0.0},
        )
    )


def _check_one_class_per_track(tmp_path, res) -> dict[int, int]:
    """Every object's class is its track's, one object per track and frame; {track id: frames seen}."""
    assert res.manifest.counts.ok == N_FRAMES and validate_dataset(tmp_path / "ds") == []
    ref = res.manifest.tracks
    assert ref is not None
    tracks = {t.track_id: t for t in read_tracks(tmp_path / "ds", ref)}
    objects = open_dataset(tmp_path / "ds").objects.to_table().to_pylist()
    assert objects and all(o["track_id"] in tracks for o in objects)
    names: dict[int, set[str]] = defaultdict(set)
    rows: dict[int, list[int]] = defaultdict(list)
    for o in objects:
        names[o["track_id"]].add(o["class_name"])
        rows[o["track_id"]].append(o["row"])
    assert {n for ns in names.values() for n in ns} <= set(CLASSES)
    for tid, t in tracks.items():
        assert names[tid] == {t.class_name}, (tid, names[tid], t.class_name)  # one class per track
        assert len(rows[tid]) == len(set(rows[tid])) == t.frames_seen  # one object per frame
    return {tid: t.frames_seen for tid, t in tracks.items()}


def test_sam3_tracks_keep_one_class(tmp_path):
    pytest.importorskip("sam3", reason="the sam3 package (SAM 3's official modules) is not installed")
    from labeler.testing.sam3_tiny import OPEN_THRESHOLD, write_tiny_sam3

    arch, checkpoint = write_tiny_sam3(tmp_path / "model")
    masks = Sam3Config(
        checkpoint=checkpoint, arch=str(arch), classes=CLASSES, confidence_threshold=OPEN_THRESHOLD
    )
    res = _run(tmp_path, masks)
    assert res.manifest.masks.track_with == "association"  # no --gpu: the video model cannot run
    seen = _check_one_class_per_track(tmp_path, res)
    assert max(seen.values()) >= 2  # detections were linked over frames


def test_sam3_video_model_tracks_keep_their_class(tmp_path, monkeypatch):
    """The video model's objects through `labeler run`: chunk ids stitched over the shards' chunks into
    tracks, each of one class, of both classes, some over several frames; the manifest records the way."""
    pytest.importorskip("sam3", reason="the sam3 package (SAM 3's official modules) is not installed")
    from labeler.models.precision import cpu_autocast
    from labeler.testing.sam3_tiny import write_tiny_sam3
    from tests.segment.sam3_video_cpu import run_video_model_on_cpu

    run_video_model_on_cpu(monkeypatch)
    arch, checkpoint = write_tiny_sam3(tmp_path / "model", video=True)
    masks = Sam3Config(
        checkpoint=checkpoint,
        arch=str(arch),
        classes=CLASSES,
        confidence_threshold=0.3,
        det_nms_thresh=0.5,
        new_det_thresh=0.335,
        track_with="video_model",
    )
    with cpu_autocast():  # the backend's bf16 autocast, on the CPU
        res = _run(tmp_path, masks)
    assert res.manifest.masks.track_with == "video_model"
    seen = _check_one_class_per_track(tmp_path, res)
    tracks = read_tracks(tmp_path / "ds", res.manifest.tracks)
    assert {t.class_name for t in tracks} == set(CLASSES)
    assert max(seen.values()) >= 2


def test_the_video_model_without_cuda_is_one_line(tmp_path):
    pytest.importorskip("sam3", reason="the sam3 package (SAM 3's official modules) is not installed")
    from labeler.errors import LabelerError
    from labeler.testing.sam3_tiny import write_tiny_sam3

    arch, checkpoint = write_tiny_sam3(tmp_path / "model", video=True)
    masks = Sam3Config(checkpoint=checkpoint, arch=str(arch), classes=CLASSES, track_with="video_model")
    with pytest.raises(LabelerError, match=r"video_model: the SAM 3 video model runs on CUDA only") as err:
        _run(tmp_path, masks)
    assert "\n" not in str(err.value) and "--gpu" in str(err.value)


def test_the_association_never_puts_two_classes_in_one_track():
    """The same mask named by another class in the next frame starts a new track; named alike, it keeps
    its track; the first class's track, still live, takes it back when it is named so again."""
    from data_schema.manifest import TrackingConfig
    from labeler.segment.track import IouDepthTracker, Sighting, track_row

    ids = np.zeros((8, 8), np.uint16)
    ids[2:6, 2:6] = 1
    tracker = IouDepthTracker(TrackingConfig())
    assert tracker.step(0, ids, {1: 1.0}, {1: "person"}) == {1: 1}
    assert tracker.step(1, ids, {1: 1.0}, {1: "box"}) == {1: 2}
    assert tracker.step(2, ids, {1: 1.0}, {1: "box"}) == {1: 2}
    assert tracker.step(3, ids, {1: 1.0}, {1: "person"}) == {1: 1}
    seen = [Sighting(k, k / 10, 1.0, n) for k, n in ((1, "box"), (2, None), (3, "box"))]
    assert track_row(2, "walk", seen).class_name == "box"


def test_the_run_key_tells_the_video_model_from_the_association():
    """A dataset tracked by the video model is not resumed by association (nor the reverse), and a sam3
    run that does not use the video model keeps the key it had before the video model's fields existed."""
    from data_schema.manifest import DepthSettings, ObjectPolicy, TrackingConfig
    from labeler.dataset.runkey import run_key

    def key(**extra: object) -> str:
        from data_schema.backends import SgbmConfig

        masks = Sam3Config(classes=CLASSES, **extra)  # type: ignore[arg-type]
        depth = DepthSettings(fx_px=100.0, baseline_m=0.1, doffs_px=0.0, z_far_m=20.0)
        return run_key(SgbmConfig(), masks, "c" * 64, depth, 3, ObjectPolicy(), TrackingConfig())

    before = {f for f in Sam3Config.model_fields if f not in {"track_with", "new_det_thresh"}}
    assert set(Sam3Config(classes=CLASSES).key_dump()) == before
    assert key() == key(track_with="association") == key(track_with="association", new_det_thresh=0.5)
    assert key(track_with="video_model") != key(track_with="association")
    assert key(track_with="video_model") != key(track_with="video_model", new_det_thresh=0.5)


def test_an_image_only_checkpoint_for_the_video_model_is_one_line(tmp_path, monkeypatch):
    """`labeler run --track --sam3-track-with video_model` with a checkpoint that has no tracker: one line
    naming the flag, before any sample is labelled."""
    pytest.importorskip("sam3", reason="the sam3 package (SAM 3's official modules) is not installed")
    from labeler.errors import LabelerError
    from labeler.testing.sam3_tiny import write_tiny_sam3
    from tests.segment.sam3_video_cpu import run_video_model_on_cpu

    run_video_model_on_cpu(monkeypatch)
    arch, checkpoint = write_tiny_sam3(tmp_path / "model")  # the image model's weights only
    masks = Sam3Config(checkpoint=checkpoint, arch=str(arch), classes=CLASSES, track_with="video_model")
    with pytest.raises(LabelerError, match=r"no 'tracker.' weights .*pass --sam3-checkpoint") as err:
        _run(tmp_path, masks)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ds" / "tables").exists()  # nothing labelled
