"""`labeler diff` over tracks: tracks matched by mask IoU over the samples both datasets have, ID switches and
depth differences per matched track — on frames built by hand, and on the demo sequence labelled twice with
different tracking settings (tests/conftest.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from labeler import open_dataset
from labeler.review.diff import diff_datasets
from labeler.review.diff_tracks import TrackedObject, TrackTally


def test_a_permuted_id_matches_and_a_swap_counts_as_switches():
    """Two objects over four unchanged frames: B calls A's track 1 "7" and track 2 "5", and swaps the two
    at frame 3; a fifth, changed frame has A's object 1 and a B object of a track only B has."""
    o = TrackedObject
    a = {f: {1: o(1, 1.0, 10), 2: o(2, 2.0, 20)} for f in range(4)}
    b = {f: {1: o(7, 1.0, 10), 2: o(5, 2.1, 20)} for f in range(3)}
    b[3] = {1: o(5, 1.0, 10), 2: o(7, 2.0, 20)}
    a[4] = {1: o(1, 1.0, 10)}
    b[4] = {1: o(7, 1.5, 10), 2: o(9, 3.0, 5)}
    tally = TrackTally(a, b, {1: "s", 2: "s"}, {5, 7, 9})
    for f in range(4):
        tally.add(f, f, ("s", f))
    joint = np.array([[0, 0, 5], [0, 10, 0]])  # A object 1 is B object 1; B object 2 overlaps nothing
    tally.add(4, 4, ("s", 4), joint, [(1, 1, 1.0)])
    got = tally.result()
    # IoU (2, 5): 60 / (80 + 70 - 60); (1, 7): (30 + 10) / (50 + 60 - 40)
    assert [(m.track_a, m.track_b) for m in got.matched] == [(2, 5), (1, 7)]
    assert [m.iou for m in got.matched] == pytest.approx([2 / 3, 4 / 7])
    assert [m.id_switches for m in got.matched] == [1, 2]  # 5 5 5 7 and 7 7 7 5 7
    assert got.id_switches == 3 and got.only_a == [] and got.only_b == [9]
    two, one = got.matched
    assert (two.frames_a, two.frames_b, two.frames_both) == (4, 4, 3)
    assert two.depth_m_diff_median == pytest.approx(0.1) and two.depth_m_diff_max_abs == pytest.approx(0.1)
    assert (one.frames_a, one.frames_both) == (5, 4)
    assert one.depth_m_diff_median == 0.0 and one.depth_m_diff_max_abs == pytest.approx(0.5)


@pytest.fixture(scope="module")
def two_trackings(tracked_sequence):
    """The demo sequence tracked with the default settings (A) and with tracks ending after a gap of 4
    frames (B): the still stretch (frames 8..11, skipped) and any longer gap cut B's tracks there."""
    from data_schema.manifest import TrackingConfig
    from tests.conftest import run_tracked

    root = tracked_sequence[0]
    run_tracked(root, "gap4", tracking=TrackingConfig(max_gap_frames=4))
    return root / "ds", root / "gap4"


def _pieces(path) -> dict[int, list[set[tuple[int, int]]]]:
    """Each track's objects ((row, id)) cut wherever its frames are more than 4 apart."""
    frame = {r["row"]: r["frame_index"] for r in open_dataset(path).samples.to_table().to_pylist()}
    objects: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for o in open_dataset(path).objects.to_table().to_pylist():
        objects[o["track_id"]].append((frame[o["row"]], o["row"], o["id"]))
    out: dict[int, list[set[tuple[int, int]]]] = {}
    for tid, seen in objects.items():
        seen.sort()
        pieces = [{seen[0][1:]}]
        for (f0, _, _), (f1, row, oid) in zip(seen, seen[1:], strict=False):
            if f1 - f0 > 4:
                pieces.append(set())
            pieces[-1].add((row, oid))
        out[tid] = pieces
    return out


def test_tracks_of_two_trackings(two_trackings, tmp_path):
    from labeler.review.diff_report import summary_line

    a, b = two_trackings
    pieces = _pieces(a)
    b_pieces = _pieces(b)
    # the premise: B's tracks are A's cut at the gaps (the masks are the same, so is the association)
    assert all(len(ps) == 1 for ps in b_pieces.values())
    assert sorted(sorted(ps[0]) for ps in b_pieces.values()) == sorted(
        sorted(p) for ps in pieces.values() for p in ps
    )
    cuts = sum(len(p) - 1 for p in pieces.values())
    assert cuts >= 3  # at least the boards seen on both sides of the still stretch (4 with the demo masks)
    report = diff_datasets(a, b, tmp_path / "r")
    t = report.tracks
    assert t is not None and report.changed == []  # the same masks: only the tables differ
    assert (t.tracks_a, t.tracks_b) == (len(pieces), len(pieces) + cuts)
    # a track cut in two matches the larger part (IoU >= 0.5 always); the others are only in B
    assert len(t.matched) == len(pieces) and t.only_a == [] and len(t.only_b) == cuts
    assert t.id_switches == cuts
    assert {m.track_a: m.id_switches for m in t.matched} == {k: len(p) - 1 for k, p in pieces.items()}
    assert all(m.depth_m_diff_max_abs == 0.0 for m in t.matched if m.frames_both)
    assert f"tracks {len(pieces)} matched, 0 only in A, {cuts} only in B, {cuts} ID switches" in summary_line(
        report, tmp_path / "r"
    )
    assert "<h2>Tracks</h2>" in (tmp_path / "r" / "index.html").read_text()


def test_a_tracked_dataset_against_itself_reads_only_tables(two_trackings, tmp_path, monkeypatch):
    from labeler.dataset.reader import Dataset

    a, _ = two_trackings

    def no_arrays(*args, **kwargs):
        raise AssertionError("unchanged samples must not read arrays")

    monkeypatch.setattr(Dataset, "read_row", no_arrays)
    t = diff_datasets(a, a, tmp_path / "same").tracks
    assert t is not None and t.id_switches == 0 and t.only_a == t.only_b == []
    assert len(t.matched) == t.tracks_a and all(m.iou == 1.0 and m.track_a == m.track_b for m in t.matched)


def test_no_track_report_unless_both_have_tracks(two_trackings, tmp_path_factory, tmp_path):
    from tests.train.conftest import make_tiny_dataset

    a, _ = two_trackings
    assert diff_datasets(a, make_tiny_dataset(tmp_path_factory.getbasetemp()), tmp_path / "r").tracks is None
