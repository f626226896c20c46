"""Review decisions: the log, what is in force, the web app's routes, and what training then leaves out."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from data_schema.review import Review
from labeler import open_dataset
from labeler.dataset.decisions import current_labels, decide, decisions_from, load_decisions
from labeler.dataset.sidecars import read_reviews, reviews_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.train.conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture
def copy(tiny, tmp_path) -> Path:
    shutil.copytree(tiny, tmp_path / "ds")
    return tmp_path / "ds"


def _review(sample: str, decision: str, obj: int | None = None, labels: str = "L") -> Review:
    return Review(
        sample_id=sample,
        object_id=obj,
        decision=decision,  # type: ignore[arg-type]
        time=datetime(2026, 11, 2, tzinfo=UTC),
        user="u",
        labels_sha256=labels,
    )


def test_latest_decision_wins_clear_withdraws_and_other_labels_are_stale():
    log = [
        _review("a", "accept"),
        _review("a", "reject"),
        _review("b", "reject"),
        _review("b", "clear"),
        _review("c", "reject", obj=2),
        _review("d", "reject", labels="old"),
    ]
    d = decisions_from(log, {"a": "L", "b": "L", "c": "L", "d": "new"})
    assert d.of("a") == "reject" and d.of("b") is None and d.of("c", 2) == "reject"
    assert d.rejected_samples == {"a"} and d.rejected_objects == {"c": {2}}
    assert list(d.stale) == [("d", None)]
    assert d.summary() == "reviewed: 1 sample (1 reject), 1 object (1 reject); 1 stale (labels changed since)"


def test_decisions_are_appended_and_a_torn_last_line_is_dropped(copy):
    ds = open_dataset(copy)
    sid = ds.sample_ids[0]
    labels = current_labels(ds)[sid]
    decide(copy, sample_id=sid, labels=labels, decision="flag", user="u")
    with open(reviews_path(copy), "ab") as f:  # a kill in the middle of a write
        f.write(b'{"sample_id": "x", "deci')
    assert [r.decision for r in read_reviews(copy)] == ["flag"]
    decide(copy, sample_id=sid, labels=labels, decision="reject", note="smeared", user="u")
    assert [r.decision for r in read_reviews(copy)] == ["flag", "reject"]
    assert load_decisions(ds).rejected_samples == {sid}
    assert reviews_path(copy).read_bytes().count(b"\n") == 2


def test_validate_lists_reviewed_counts_and_damaged_lines(copy):
    from typer.testing import CliRunner

    from labeler.cli.main import app
    from labeler.dataset.validate import validate_dataset

    ds = open_dataset(copy)
    labels = current_labels(ds)
    a, b = ds.sample_ids[:2]
    decide(copy, sample_id=a, labels=labels[a], decision="reject", user="u")
    decide(copy, sample_id=b, labels=labels[b], decision="accept", object_id=ds[1].objects[0].id, user="u")
    res = CliRunner().invoke(app, ["validate", str(copy), "--scheduler", "sync", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "valid; reviewed: 1 sample (1 reject), 1 object (1 accept)" in res.output
    with open(reviews_path(copy), "ab") as f:
        f.write(b"not json\n")
    assert any("reviews.jsonl:3: not a review decision" in p for p in validate_dataset(copy))


def test_training_items_leave_rejected_samples_out_and_rejected_masks_are_no_object(copy):
    from labeler.train.heads.data import HeadsDataset

    ds = open_dataset(copy)
    labels = current_labels(ds)
    ids = ds.sample_ids
    rejected, edited = ids[0], ids[1]
    obj = ds[1].objects[0].id
    decide(copy, sample_id=rejected, labels=labels[rejected], decision="reject", user="u")
    decide(copy, sample_id=edited, labels=labels[edited], decision="reject", object_id=obj, user="u")
    items = HeadsDataset(copy, ids, input_size=56, train=False)
    assert items.sample_ids == ids[1:]
    assert obj not in np.unique(items[0]["ids"].numpy())  # 56 px nearest resize keeps the other ids
    everything = HeadsDataset(copy, ids, input_size=56, train=False, include_rejected=True)
    assert everything.sample_ids == ids and obj in np.unique(everything[1]["ids"].numpy())


# ------------------------------------------------------------------------------------ the web app


@pytest.fixture
def client(copy):
    from starlette.testclient import TestClient

    from labeler.review.app import create_app

    return TestClient(create_app(copy, user="tester"), base_url="http://127.0.0.1")


def test_listing_sorts_by_doubt_and_filters_by_decision_and_depth(client, copy):
    ds = open_dataset(copy)
    page = client.get("/")
    assert page.status_code == 200
    order = [line.split('"')[1] for line in page.text.split("data-sample=")[1:]]
    assert sorted(order) == sorted(ds.sample_ids)
    from labeler.doubt import with_doubt

    t, _ = with_doubt(ds.samples.to_table(), ds.objects.to_table(), 128 * 96)
    scores = dict(zip(t.column("sample_id").to_pylist(), t.column("doubt").to_pylist(), strict=True))
    assert [scores[s] for s in order] == sorted(scores.values(), reverse=True)
    r = client.post("/api/decide", json={"sample_id": order[0], "decision": "reject", "note": "holes"})
    assert r.status_code == 200
    assert r.json() == {
        "sample": "reject",
        "objects": {},
        "reviewed": "reviewed: 1 sample (1 reject), 0 objects",
    }
    assert client.get("/?decision=reject").text.count("data-sample=") == 1
    assert client.get("/?decision=undecided").text.count("data-sample=") == len(order) - 1
    assert client.get("/?depth_max=0.01").text.count("data-sample=") == 0
    assert read_reviews(copy)[0].note == "holes" and read_reviews(copy)[0].user == "tester"


def test_sample_page_layers_maps_and_object_decisions(client, copy):
    ds = open_dataset(copy)
    s = ds[2]
    page = client.get(f"/sample/{s.sample_id}")
    assert page.status_code == 200 and 'id="sample-decision"' in page.text
    assert all(f'data-id="{o.id}"' in page.text for o in s.objects)
    for name in ("left", "disparity", "depth", "masks"):
        png = client.get(f"/layer/{s.sample_id}/{name}.png")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    maps = client.get(f"/maps/{s.sample_id}.bin").content
    h, w = s.depth_m.shape
    np.testing.assert_array_equal(np.frombuffer(maps[: 4 * h * w], "<f4").reshape(h, w), s.depth_m)
    np.testing.assert_array_equal(np.frombuffer(maps[4 * h * w :], "<u2").reshape(h, w), s.instance_ids)
    oid = s.objects[0].id
    r = client.post("/api/decide", json={"sample_id": s.sample_id, "object_id": oid, "decision": "flag"})
    assert r.json() == {
        "sample": None,
        "objects": {str(oid): "flag"},
        "reviewed": "reviewed: 0 samples, 1 object (1 flag)",
    }
    assert (
        client.post(
            "/api/decide", json={"sample_id": s.sample_id, "object_id": 999, "decision": "flag"}
        ).status_code
        == 422
    )
    assert client.get("/sample/nope").status_code == 404
    assert client.get(f"/layer/{s.sample_id}/secret.png").status_code == 404


def test_decisions_only_as_json_and_only_for_local_hosts(client, copy):
    from starlette.testclient import TestClient

    from labeler.review.app import create_app

    sid = open_dataset(copy).sample_ids[0]
    form = client.post(
        "/api/decide",
        content=f"sample_id={sid}&decision=reject",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415 and read_reviews(copy) == []
    rebound = TestClient(create_app(copy, user="x"), base_url="http://attacker.example")
    assert rebound.get("/").status_code == 400
    lan = TestClient(create_app(copy, user="x", host="0.0.0.0", token="t" * 16), base_url="http://192.0.2.7")
    assert lan.get("/", headers={"authorization": "token " + "t" * 16}).status_code == 200  # other names


def test_review_refuses_a_folder_that_is_not_a_dataset_and_warns_for_other_hosts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import labeler.review.app as review_app
    from labeler.cli.main import app

    res = CliRunner().invoke(app, ["review", str(tmp_path)])
    assert res.exit_code == 1 and "no manifest" in res.output
    served = []
    monkeypatch.setattr(review_app, "serve", lambda *a, **k: served.append(k))
    from tests.train.conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path)
    res = CliRunner().invoke(app, ["review", str(ds), "--host", "0.0.0.0", "--port", "9999"])
    assert res.exit_code == 0 and "warning: listening on 0.0.0.0" in res.output
    assert served[0]["host"] == "0.0.0.0" and served[0]["port"] == 9999 and served[0]["token"]
