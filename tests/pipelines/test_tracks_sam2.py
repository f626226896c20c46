"""`labeler run --track --masks sam2` on the tiny random SAM2: every sequence chunk (its frames within a
shard) tracked by the SAM2 video predictor, chunks stitched into one set of track ids, the tracks table,
validate, a rerun that changes nothing, a run stopped before its track pass resumes to the same version;
and the chunk stitcher on instance maps whose truth is known."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from data_schema.commands import PseudoLabelConfig
from data_schema.manifest import TrackingConfig
from labeler import open_dataset
from labeler.dataset.tables import read_tracks
from labeler.dataset.validate import validate_dataset
from labeler.segment.track import ChunkStitcher
from labeler.testing.sam2_tiny import tiny_sam2_config, write_tiny_sam2
from pipelines.pseudo_label import run_pseudo_label
from tests.conftest import identity_calibration_yaml

W, H, N_FRAMES, STILL, PER_SHARD = 128, 96, 9, 2, 3


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from labeler.synthetic import SyntheticRig
    from labeler.synthetic.sequence import write_demo_sequence

    root = tmp_path_factory.mktemp("sam2-tracked")
    f = 0.78 * W
    write_demo_sequence(
        root / "demo", SyntheticRig.rectified(W, H, focal_px=f), n_frames=N_FRAMES, still_frames=STILL
    )
    identity_calibration_yaml(root / "calib.yaml", W, H, fx=f)
    return root, write_tiny_sam2(root / "model")


def _run(root: Path, model, out: str, **kw):
    cfg = dict(
        rectify=True,
        stride=1,
        track=True,
        tracking=TrackingConfig(keyframe_every=2),
        scheduler="sync",
        progress=False,
        previews=False,
        samples_per_shard=PER_SHARD,
        masks=tiny_sam2_config(model, points_per_side=2),
        objects={"min_area_px": 8, "min_valid_fraction": 0.0},
    )
    cfg.update(kw)
    return run_pseudo_label(
        PseudoLabelConfig(inputs=root / "demo" / "sequence", calib=root / "calib.yaml", out=root / out, **cfg)
    )


def test_tracked_sam2_run_tracks_resumes_and_validates(scene, monkeypatch):
    import pipelines.graph

    root, model = scene
    chunks: list[int] = []
    real = pipelines.graph.track_masks_stage

    def spy(disps, *a, **k):
        chunks.append(len(disps))
        return real(disps, *a, **k)

    monkeypatch.setattr(pipelines.graph, "track_masks_stage", spy)
    first = _run(root, model, "ds")
    monkeypatch.undo()
    assert chunks == [PER_SHARD] * (N_FRAMES // PER_SHARD)  # one tracking call per shard's chunk
    assert first.manifest.counts.skipped == STILL and first.manifest.counts.ok == N_FRAMES - STILL
    ref = first.manifest.tracks
    assert ref is not None and first.tracks == ref.n_rows > 0
    objects = open_dataset(root / "ds").objects.to_table().to_pylist()
    assert objects and all(o["track_id"] is not None for o in objects)
    tracks = read_tracks(root / "ds", ref)
    counts: dict[int, int] = {}
    for o in objects:
        counts[o["track_id"]] = counts.get(o["track_id"], 0) + 1
    assert {t.track_id: t.frames_seen for t in tracks} == counts
    assert validate_dataset(root / "ds") == []
    again = _run(root, model, "ds")
    assert again.labelled == 0 and again.dataset_version == first.dataset_version

    # stopped after every shard was written, before the track pass: chunk ids only, no tracks table
    shutil.rmtree(root / "ds")
    import pipelines.track

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.track, "track_sequences", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(root, model, "ds")
    monkeypatch.undo()
    assert validate_dataset(root / "ds") == []  # a tracked run stopped before its pass is not damage
    resumed = _run(root, model, "ds")
    assert resumed.labelled == 0 and resumed.dataset_version == first.dataset_version
    got = open_dataset(root / "ds").objects.to_table().to_pylist()
    # the same objects with the same tracks (doubt signals are float32 shape measures: equal to ~1e-6)
    diff = [(k, a[k], b[k]) for a, b in zip(got, objects, strict=True) for k in a if a[k] != b[k]]
    assert all(
        k in ("thickness_px", "edge_alignment") and x == pytest.approx(y, rel=1e-5) for k, x, y in diff
    )


def test_other_tracking_settings_are_another_dataset(scene):
    from labeler.errors import LabelerError

    root, model = scene
    _run(root, model, "other", samples_per_shard=50)
    with pytest.raises(LabelerError):
        _run(root, model, "other", samples_per_shard=50, tracking=TrackingConfig(keyframe_every=5))


def test_keyframe_flags_without_a_backend_that_tracks_are_one_line(scene):
    from labeler.errors import LabelerError

    root, model = scene
    for kw in ({"track": False}, {"masks": {"name": "classical"}}):
        with pytest.raises(LabelerError, match="--keyframe-every") as err:
            _run(root, model, "refused", **kw)
        assert "\n" not in str(err.value)
    assert not (root / "refused").exists()


def _frame(boxes: dict[int, tuple[int, int]]) -> np.ndarray:
    ids = np.zeros((20, 40), np.uint16)
    for oid, (x0, x1) in boxes.items():
        ids[5:15, x0:x1] = oid
    return ids


def test_chunks_are_stitched_at_their_borders_and_again_alike():
    """Chunk 0 (frames 0-1) sees A (chunk id 7) and B (chunk id 9); chunk 1 (frames 2-3) sees A moved a
    little (chunk id 1), B gone far (no overlap: a new track), and C added at frame 3 (a new track)."""
    frames = [
        (0, 0, _frame({1: (0, 8), 2: (20, 28)}), {1: 7, 2: 9}),
        (1, 0, _frame({1: (1, 9), 2: (20, 28)}), {1: 7, 2: 9}),
        (2, 1, _frame({1: (2, 10), 2: (32, 40)}), {1: 1, 2: 2}),
        (3, 1, _frame({1: (3, 11), 2: (32, 40), 3: (14, 18)}), {1: 1, 2: 2, 3: 3}),
    ]

    def stitch(stored):
        s = ChunkStitcher(TrackingConfig(min_iou=0.3))
        return [
            s.step(f, c, ids, stored[k], dict.fromkeys(ids_, 2.0))
            for k, (f, c, ids, ids_) in enumerate(frames)
        ]

    got = stitch([chunk for *_, chunk in frames])
    assert got == [{1: 1, 2: 2}, {1: 1, 2: 2}, {1: 1, 2: 3}, {1: 1, 2: 3, 3: 4}]
    assert stitch(got) == got  # the stored tracks of a pass stitch to the same tracks

    s = ChunkStitcher(TrackingConfig(min_iou=0.3, max_depth_jump_m=0.5))
    s.step(0, 0, frames[0][2], {1: 7, 2: 9}, {1: 2.0, 2: 2.0})
    assert s.step(1, 1, frames[1][2], {1: 5, 2: 6}, {1: 3.0, 2: 2.1}) == {1: 3, 2: 2}  # A jumped 1 m
