"""The review app's tracks: the tracks listing, a track's strip, decisions on a whole track (one record per
frame, applied as object decisions), bad requests, and a dataset labelled without `--track`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from labeler import open_dataset
from labeler.dataset.decisions import load_decisions
from labeler.dataset.sidecars import read_reviews
from labeler.dataset.tables import read_tracks


@pytest.fixture(scope="module")
def tracked(tracked_sequence) -> Path:
    """The session's tracked demo sequence (tests/conftest.py); tests that decide work on a copy."""
    return tracked_sequence[0] / "ds"


@pytest.fixture
def copy(tracked, tmp_path) -> Path:
    shutil.copytree(tracked, tmp_path / "ds")
    return tmp_path / "ds"


def _client(path: Path):
    from starlette.testclient import TestClient

    from labeler.review.app import create_app

    return TestClient(create_app(path, user="tester"), base_url="http://127.0.0.1")


def _track_objects(ds, track_id: int) -> list[tuple[int, str, int]]:
    """(frame index, sample id, object id) of a track's objects, read from the tables directly."""
    samples = {s["row"]: s for s in ds.samples.to_table().to_pylist()}
    return sorted(
        (samples[o["row"]]["frame_index"], samples[o["row"]]["sample_id"], o["id"])
        for o in ds.objects.to_table().to_pylist()
        if o["track_id"] == track_id
    )


def _longest(ds) -> int:
    return max(read_tracks(ds.path, ds.manifest.tracks), key=lambda t: (t.frames_seen, -t.track_id)).track_id


def test_tracks_listing_and_a_tracks_strip_in_frame_order(copy):
    ds = open_dataset(copy)
    rows = read_tracks(copy, ds.manifest.tracks)
    client = _client(copy)
    page = client.get("/tracks")
    assert page.status_code == 200
    assert [int(x.split('"')[1]) for x in page.text.split("data-track=")[1:]] == sorted(
        t.track_id for t in rows
    )
    tid = _longest(ds)
    truth = _track_objects(ds, tid)
    assert len(truth) == next(t.frames_seen for t in rows if t.track_id == tid) >= 5
    strip = client.get(f"/track/{tid}")
    assert strip.status_code == 200 and f"<b id='n-frames'>{len(truth)}</b>" in strip.text
    cards = re.findall(r'data-sample="([^"]+)" data-object="(\d+)".*?frame <b>(\d+)</b>', strip.text)
    assert [(int(f), s, int(o)) for s, o, f in cards] == truth  # every frame, in frame order
    _, sid, oid = truth[0]
    png = client.get(f"/object/{sid}/{oid}.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    import cv2

    thumb = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (120, 160, 3)  # 120 px high, the frame's aspect
    assert ((thumb == (0, 220, 255)).all(-1)).sum() > 10  # the object's outline, yellow (BGR)
    assert client.get(f"/object/{sid}/999.png").status_code == 404
    sample = client.get(f"/sample/{sid}")  # the sample page links the object's track
    assert (
        f'<a class="track" href="/track/{tid}">{tid}</a>' in sample.text and 'id="open-track"' in sample.text
    )


def test_the_tracks_listing_pages_and_counts_only_its_page(copy, monkeypatch):
    """Pages of PAGE_SIZE tracks with links between them; decisions are counted for the page's tracks only;
    `flagged=1` lists only the tracks whose depth jump flags them (none on the demo sequence)."""
    import labeler.review.listing as listing
    from labeler.dataset.decisions import Decisions

    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    ds = open_dataset(copy)
    ids = sorted(t.track_id for t in read_tracks(copy, ds.manifest.tracks))
    assert len(ids) > 4
    client = _client(copy)
    pages = -(-len(ids) // 2)
    seen = []
    for k in range(1, pages + 1):
        page = client.get(f"/tracks?page={k}").text
        seen += [int(x.split('"')[1]) for x in page.split("data-track=")[1:]]
        assert f"page {k} of {pages}" in page
        assert ('id="prev-page"' in page) == (k > 1) and ('id="next-page"' in page) == (k < pages)
    assert seen == ids  # every track once, in id order
    asked = []
    of = Decisions.of
    monkeypatch.setattr(Decisions, "of", lambda self, sid, oid=None: asked.append(sid) or of(self, sid, oid))
    client.get("/tracks?page=1")
    first = set(ids[:2])
    objects = ds.objects.to_table().to_pylist()
    assert len(asked) == sum(o["track_id"] in first for o in objects) < len(objects)
    only = client.get("/tracks?flagged=1").text
    assert '<span id="n-tracks">0</span> flagged tracks' in only and "data-track=" not in only
    assert client.get("/tracks?page=0").status_code == 422
    assert (
        f"page {pages} of {pages}" in client.get(f"/tracks?page={pages + 5}").text
    )  # past the end: the last


def test_a_decision_on_a_track_applies_to_every_frame_and_clear_withdraws_it(copy):
    ds = open_dataset(copy)
    tid = _longest(ds)
    truth = _track_objects(ds, tid)
    client = _client(copy)
    r = client.post("/api/decide-track", json={"track_id": tid, "decision": "reject", "note": "a shadow"})
    assert r.status_code == 200
    assert r.json()["frames"] == {s: "reject" for _, s, _ in truth}
    assert r.json()["reviewed"] == f"reviewed: 0 samples, {len(truth)} objects ({len(truth)} reject)"
    saved = read_reviews(copy)
    assert [(x.sample_id, x.object_id, x.track_id, x.decision, x.note) for x in saved] == [
        (s, o, tid, "reject", "a shadow") for _, s, o in truth
    ]
    rejected = load_decisions(open_dataset(copy)).rejected_objects  # what the exports and training read
    assert rejected == {s: {o} for _, s, o in truth}
    _, sid, oid = truth[1]
    assert client.get(f"/api/decisions/{sid}").json()["objects"] == {str(oid): "reject"}
    from labeler.review import tracks
    from labeler.review.listing import ReviewData

    data = ReviewData(copy)  # a track's page summarises it as the listing does
    listed = tracks.track_listing(data).rows
    assert listed == [tracks.summary_of(s.track, tracks.track_frames(data, s.track.track_id)) for s in listed]
    listing = client.get("/tracks").text
    row = listing.split(f'data-track="{tid}"')[1].split("</tr>")[0]
    assert f'<span class="badge reject">reject {len(truth)}</span>' in row
    assert client.get(f"/track/{tid}").text.count('class="badge reject"') == len(truth)
    r = client.post("/api/decide-track", json={"track_id": tid, "decision": "clear"})
    assert r.json()["frames"] == {s: None for _, s, _ in truth}
    assert load_decisions(open_dataset(copy)).rejected_objects == {}


def test_bad_track_requests_are_one_line_4xx(copy):
    client = _client(copy)
    r = client.post("/api/decide-track", json={"track_id": 0, "decision": "reject"})
    assert r.status_code == 422 and "track_id" in r.json()["detail"] and "\n" not in r.json()["detail"]
    r = client.post("/api/decide-track", json={"track_id": 1, "decision": "maybe"})
    assert r.status_code == 422 and r.json()["detail"].startswith("invalid decision: decision:")
    r = client.post("/api/decide-track", json={"track_id": 1, "decision": "reject", "extra": 1})
    assert r.status_code == 422
    r = client.post("/api/decide-track", json={"track_id": 9999, "decision": "reject"})
    assert r.status_code == 404 and r.json()["detail"].endswith("the dataset has no such track")
    form = client.post(
        "/api/decide-track", content="track_id=1&decision=reject", headers={"content-type": "text/plain"}
    )
    assert form.status_code == 415
    assert client.get("/track/9999").status_code == 404
    assert read_reviews(copy) == []


def test_an_untracked_dataset_says_it_has_no_tracks(tmp_path_factory):
    from tests.train.conftest import make_tiny_dataset

    client = _client(make_tiny_dataset(tmp_path_factory.getbasetemp()))
    page = client.get("/tracks")
    assert page.status_code == 200 and 'id="no-tracks"' in page.text and "without <code>--track" in page.text
    r = client.get("/track/1")
    assert r.status_code == 404 and "no tracks (labelled without --track)" in r.json()["detail"]
    assert client.post("/api/decide-track", json={"track_id": 1, "decision": "flag"}).status_code == 404
    sid = open_dataset(make_tiny_dataset(tmp_path_factory.getbasetemp())).sample_ids[0]
    assert "<th>track</th>" not in client.get(f"/sample/{sid}").text  # no track column
