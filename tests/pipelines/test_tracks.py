"""A moving sequence through `labeler run --track`: rows in frame order, still frames skipped, tracks against
the rendered truth, the tracks table and its README query, resume to the same version, validate."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from data_schema.commands import PseudoLabelConfig
from labeler import open_dataset
from labeler.dataset.tables import read_tracks
from labeler.dataset.validate import validate_dataset
from labeler.errors import InputError
from pipelines.pseudo_label import run_pseudo_label
from tests.conftest import (
    TRACK_FRAMES,
    TRACK_STILL,
    identity_calibration_yaml,
    kill_after_first_shard,
    run_tracked,
)

N_FRAMES, STILL = TRACK_FRAMES, TRACK_STILL  # the still stretch: frames 8..11 repeat frame 7
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def tracked(tracked_sequence):
    """The session's tracked demo sequence (tests/conftest.py)."""
    return tracked_sequence


def _samples(out: Path):
    return open_dataset(out).samples.to_table().sort_by("row").to_pylist()


def test_a_sequence_is_contiguous_in_frame_order_and_still_frames_are_skipped(tracked):
    root, truth, res = tracked
    rows = _samples(root / "ds")
    assert [r["frame_index"] for r in rows] == list(range(N_FRAMES))
    assert [r["row"] for r in rows] == list(range(N_FRAMES))
    assert {r["sequence"] for r in rows} == {"walk"}
    assert [r["timestamp_s"] for r in rows] == pytest.approx([k / truth.fps for k in range(N_FRAMES)])
    skipped = [r["frame_index"] for r in rows if r["status"] == "skipped"]
    still = [f.frame for f in truth.frames if f.still]
    assert still == list(range(8, 12)) and skipped == still  # all of the stretch, nothing outside it
    assert {r["duplicate_of"] for r in rows if r["status"] == "skipped"} == {"walk_f000007"}
    assert res.still_skipped == STILL and res.manifest.counts.skipped == STILL
    assert res.manifest.counts.ok == N_FRAMES - STILL
    assert validate_dataset(root / "ds") == []


def test_tracks_follow_the_true_objects(tracked):
    from labeler.testing.tracking import score_dataset

    root, _, _ = tracked
    ds = open_dataset(root / "ds")
    objects = ds.objects.to_table().to_pylist()
    assert objects and all(o["track_id"] is not None for o in objects)
    score = score_dataset(ds, root / "demo" / "truth" / "sequence")
    # the entering object's first frames (a sliver at the border) may take one switch
    assert score.id_switches <= 1, score
    assert score.idf1 >= 0.85, score


def test_tracks_table_and_the_readme_query(tracked):
    import duckdb

    root, truth, res = tracked
    ref = res.manifest.tracks
    assert ref is not None and res.tracks == ref.n_rows == res.manifest.counts.tracks
    tracks = read_tracks(root / "ds", ref)
    objects = open_dataset(root / "ds").objects.to_table().to_pylist()
    counts: dict[int, int] = {}
    for o in objects:
        counts[o["track_id"]] = counts.get(o["track_id"], 0) + 1
    assert {t.track_id: t.frames_seen for t in tracks} == counts
    # the walking object (true id 1) comes nearer: its track's approach speed is the truth's between the
    # track's first and last frames (the still stretch included: 0.5 m/s while it walks, less on average)
    walker = max(tracks, key=lambda t: (t.frames_seen, t.approach_speed_m_s or -1))
    depth = {f.frame: {o.id: o.depth_m_median for o in f.objects} for f in truth.frames}
    true_speed = (depth[walker.first_frame][1] - depth[walker.last_frame][1]) / (
        (walker.last_frame - walker.first_frame) / truth.fps
    )
    assert walker.approach_speed_m_s == pytest.approx(true_speed, abs=0.05)
    assert walker.depth_m_nearest == pytest.approx(depth[walker.nearest_frame][1], rel=0.05)
    sql = re.search(r"```sql\n(.*?)```", README.read_text(), re.S)
    assert sql, "README shows the tracks query"
    text = sql.group(1).replace("DATASET", str(root / "ds")).replace("1.5", "2.3")
    got = duckdb.sql(text).fetchall()
    want = sorted(
        (t for t in tracks if t.depth_m_nearest is not None and t.depth_m_nearest < 2.3),
        key=lambda t: (t.depth_m_nearest, t.track_id),
    )
    assert [g[0] for g in got] == [t.track_id for t in want] and walker.track_id in [g[0] for g in got]


def test_a_rerun_changes_nothing(tracked):
    root, _, res = tracked
    again = run_tracked(root)
    assert again.dataset_version == res.dataset_version and again.labelled == 0


def test_a_run_stopped_before_its_tracks_resumes_to_the_same_version(tracked):
    import shutil

    root, _, _ = tracked
    first = run_tracked(root, out="cut").dataset_version  # the sources' paths are labels: the same --out
    shutil.rmtree(root / "cut")
    # the state a kill after the last shard leaves: every shard written, no track ids, no tracks table
    run_tracked(root, out="cut", track=False)
    resumed = run_tracked(root, out="cut")
    assert resumed.labelled == 0 and resumed.dataset_version == first
    assert validate_dataset(root / "cut") == []


def test_tracked_dataset_needs_track_and_validate_checks_tracks(tracked, tmp_path):
    import shutil

    root, _, res = tracked
    with pytest.raises(InputError, match="was labelled with --track"):
        run_tracked(root, track=False)
    copy = tmp_path / "copy"
    shutil.copytree(root / "ds", copy)
    ref = res.manifest.tracks
    assert ref is not None
    from labeler.dataset.tables import write_tracks_table

    rows = read_tracks(copy, ref)
    path = copy / "tables" / "tracks" / ref.file
    tmp = write_tracks_table(copy, [rows[0].model_copy(update={"frames_seen": 99}), *rows[1:]])
    (copy / "tables" / "tracks" / tmp.file).replace(path)
    problems = validate_dataset(copy)
    assert any("tracks table rows changed" in p for p in problems), problems


def test_track_without_a_sequence_is_one_line(tmp_path):
    from tests.conftest import write_plane_pairs

    write_plane_pairs(tmp_path / "rect", 2)
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 128, 96)
    cfg = PseudoLabelConfig(
        inputs=tmp_path / "rect",
        calib=calib,
        out=tmp_path / "ds",
        track=True,
        scheduler="sync",
        progress=False,
    )
    with pytest.raises(InputError, match="--track needs a sequence") as err:
        run_pseudo_label(cfg)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / "rect"))
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_a_tracked_run_killed_after_its_first_shard_resumes_to_the_same_version(tracked):
    """kill -9 of `labeler run --track` once a shard is committed, the same command again: the dataset
    version, the tracks table and the objects' track ids are those of an uninterrupted run."""
    import shutil
    import signal
    import subprocess
    import sys

    root, _, _ = tracked
    out = root / "killed"  # the sources' paths are labels: both runs write to the same --out
    cmd = [sys.executable, "-m", "labeler.cli", "run", str(root / "demo" / "sequence")]
    cmd += ["--calib", str(root / "calib.yaml"), "--out", str(out), "--track", "--stride", "1"]
    cmd += ["--samples-per-shard", "2", "--scheduler", "sync"]

    def finished() -> tuple[str, list, list]:
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        assert validate_dataset(out) == []
        ds = open_dataset(out)
        ref = ds.manifest.tracks
        assert ref is not None
        objects = ds.objects.to_table().select(["row", "id", "track_id"]).to_pylist()
        return ds.manifest.dataset_version, read_tracks(out, ref), objects

    whole = finished()
    shutil.rmtree(out)
    rc, n_done = kill_after_first_shard(cmd, out)
    assert rc == -signal.SIGKILL and 0 < n_done < N_FRAMES // 2, "not killed mid-run"
    assert not (out / "tables" / "tracks").exists() or not any((out / "tables" / "tracks").iterdir())
    resumed = finished()
    assert resumed[0] == whole[0]
    assert resumed[1] == whole[1] and resumed[1]
    assert resumed[2] == whole[2]


def test_a_truncated_video_fails_its_missing_frames_in_one_line_each(tracked, tmp_path):
    """A video cut short: the frames it no longer holds are failed samples with one-line errors, the
    frames before them are labelled and tracked."""
    root, _, _ = tracked
    video = root / "demo" / "sequence" / "walk.avi"
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "walk.avi").write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    res = run_pseudo_label(
        PseudoLabelConfig(
            inputs=tmp_path / "cut",
            calib=root / "calib.yaml",
            out=tmp_path / "ds",
            rectify=True,
            stride=1,
            track=True,
            scheduler="sync",
            progress=False,
            previews=False,
        )
    )
    rows = _samples(tmp_path / "ds")
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r["frame_index"] for r in rows if r["status"] == "ok"]
    assert failed and ok and len(rows) == N_FRAMES and max(ok) < min(r["frame_index"] for r in failed)
    assert [r["frame_index"] for r in rows] == list(range(N_FRAMES))  # in frame order
    for r in failed:  # a frame the video does not hold keeps its place in the sequence
        assert r["sequence"] == "walk" and r["timestamp_s"] == pytest.approx(r["frame_index"] / 10)
        assert "\n" not in r["error"] and f"frame {r['frame_index']} cannot be decoded" in r["error"]
    assert res.tracks and validate_dataset(tmp_path / "ds") == []


@pytest.mark.parametrize(("max_gap", "kept"), [(15, True), (1, False)])
def test_a_missing_timestamped_frame_is_a_gap_the_tracker_sees(tracked, tmp_path, caplog, max_gap, kept):
    """Frames named by their capture time, frame 3 missing: one warning, frame numbers that skip it, and
    the standing object (true id 4) keeps its track over the gap only within --track-max-gap-frames."""
    import logging

    import cv2

    from data_schema.manifest import TrackingConfig
    from labeler.io import write_png

    root, _, _ = tracked
    cap = cv2.VideoCapture(str(root / "demo" / "sequence" / "walk.avi"))
    frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(6)]
    cap.release()
    for k in (0, 1, 2, 4, 5):
        write_png(tmp_path / "stamped" / f"{1700000000.0 + 0.1 * k:.3f}.png", frames[k])
    with caplog.at_level(logging.WARNING):
        run_pseudo_label(
            PseudoLabelConfig(
                inputs=tmp_path / "stamped",
                calib=root / "calib.yaml",
                out=tmp_path / "ds",
                rectify=True,
                track=True,
                tracking=TrackingConfig(max_gap_frames=max_gap),
                scheduler="sync",
                progress=False,
                previews=False,
            )
        )
    assert sum("1 frame(s) missing before 1700000000.400.png" in r.getMessage() for r in caplog.records) == 1
    rows = [r for r in _samples(tmp_path / "ds") if r["status"] == "ok"]
    assert [r["frame_index"] for r in rows] == [0, 1, 2, 4, 5]
    ds = open_dataset(tmp_path / "ds")
    objects = ds.objects.to_table().to_pylist()
    standing = []
    for r in rows:  # the object over true id 4 in each frame
        pred = ds.read_row(r["row"], ("instance_ids",))["instance_ids"]
        true = np.load(root / "demo" / "truth" / "sequence" / f"frame_{r['frame_index']:06d}.npz")
        oid = np.bincount(pred[true["instance_ids"] == 4]).argmax()
        assert oid > 0
        standing.append(next(o["track_id"] for o in objects if o["row"] == r["row"] and o["id"] == oid))
    assert len(set(standing[:3])) == 1 and len(set(standing[3:])) == 1
    assert (standing[2] == standing[3]) is kept
