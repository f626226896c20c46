"""The review app's guards: an invalid decision is a 4xx with one line, never a 500; a server that listens
beyond loopback answers only with its token (issue 25, items 15 and "who may decide")."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeler import open_dataset
from labeler.dataset.sidecars import read_reviews


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.train.conftest import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.getbasetemp())


@pytest.fixture
def copy(tiny, tmp_path) -> Path:
    shutil.copytree(tiny, tmp_path / "ds")
    return tmp_path / "ds"


def _client(ds: Path, base: str = "http://127.0.0.1", **kw):
    from starlette.testclient import TestClient

    from labeler.review.app import create_app

    return TestClient(create_app(ds, user="t", **kw), base_url=base, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"sample_id": "SID", "decision": "delete"}', "decision"),
        ("[]", "object"),
        ('{"sample_id": "SID", "decision": "flag", "note": "' + "x" * 2001 + '"}', "note"),
        ('{"sample_id": "SID", "decision": ', "JSON"),
        ('{"sample_id": "SID", "decision": "flag", "extra": 1}', "extra"),
        ('{"sample_id": 5, "decision": "flag"}', "sample_id"),
        (b'\xff\xfe{"sample_id"', "JSON"),
    ],
)
def test_an_invalid_decision_is_a_422_with_one_line(copy, body, needle):
    sid = open_dataset(copy).sample_ids[0]
    content = body.replace("SID", sid) if isinstance(body, str) else body
    r = _client(copy).post("/api/decide", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    reason = r.json()["detail"]
    assert isinstance(reason, str) and "\n" not in reason and needle in reason and len(reason) < 300
    assert read_reviews(copy) == []


def test_a_2000_character_note_is_saved(copy):
    sid = open_dataset(copy).sample_ids[0]
    r = _client(copy).post("/api/decide", json={"sample_id": sid, "decision": "flag", "note": "n" * 2000})
    assert r.status_code == 200 and read_reviews(copy)[0].note == "n" * 2000


def test_beyond_loopback_only_the_token_opens_pages_and_decisions(copy):
    sid = open_dataset(copy).sample_ids[0]
    lan = _client(copy, base="http://192.0.2.7", host="0.0.0.0", token="s3cret-token")
    assert lan.get("/").status_code == 403
    assert lan.get(f"/sample/{sid}").status_code == 403
    assert lan.get(f"/layer/{sid}/left.png").status_code == 403
    assert lan.get("/?token=wrong").status_code == 403
    r = lan.post("/api/decide", json={"sample_id": sid, "decision": "reject"})
    assert r.status_code == 403 and "token" in r.text and read_reviews(copy) == []
    # the printed URL: the token becomes a cookie and the browser is sent on without it in the address
    first = lan.get("/?token=s3cret-token", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert lan.get("/").status_code == 200  # the cookie now travels with each request
    assert lan.get(f"/sample/{sid}").status_code == 200
    assert lan.post("/api/decide", json={"sample_id": sid, "decision": "reject"}).status_code == 200
    assert [r.decision for r in read_reviews(copy)] == ["reject"]
    # a script may send the token as a header instead
    bare = _client(copy, base="http://192.0.2.7", host="0.0.0.0", token="s3cret-token")
    assert bare.get("/", headers={"authorization": "token s3cret-token"}).status_code == 200
    assert bare.get("/", headers={"authorization": "token nope"}).status_code == 403


def test_loopback_needs_no_token(copy):
    assert _client(copy).get("/").status_code == 200


def test_an_open_host_without_a_token_is_refused(copy):
    from labeler.errors import LabelerError
    from labeler.review.app import create_app

    with pytest.raises(LabelerError, match="token"):
        create_app(copy, user="t", host="0.0.0.0")


def test_review_cli_prints_a_token_url_and_checks_the_port(tiny, monkeypatch):
    from typer.testing import CliRunner

    import labeler.review.app as review_app
    from labeler.cli.main import app

    served: list[dict] = []
    monkeypatch.setattr(review_app, "serve", lambda *a, **k: served.append(k))
    res = CliRunner().invoke(app, ["review", str(tiny), "--host", "0.0.0.0", "--port", "9999"])
    assert res.exit_code == 0, res.output
    token = served[0]["token"]
    assert len(token) >= 32 and f"http://0.0.0.0:9999/?token={token}" in res.output
    res = CliRunner().invoke(app, ["review", str(tiny), "--host", "0.0.0.0", "--token", "mine-0123456789"])
    assert served[1]["token"] == "mine-0123456789" and "?token=mine-0123456789" in res.output
    res = CliRunner().invoke(app, ["review", str(tiny), "--token", "short"])
    assert res.exit_code == 2 and "--token" in res.output
    res = CliRunner().invoke(app, ["review", str(tiny)])
    assert served[-1]["token"] is None and "token" not in res.output.split("http://")[1]
    for port in ("-5", "0", "70000"):
        res = CliRunner().invoke(app, ["review", str(tiny), "--port", port])
        assert res.exit_code == 2 and "--port" in res.output and "Traceback" not in res.output
