"""A track in a real browser (headless Chromium, as tests/review/test_review_browser.py): from a sample page
an object's track opens; its strip shows every labelled frame of the track; a keypress rejects the track
and every frame's badge, and the saved log, say so. The page's screenshot goes to LABELER_SHOT_DIR (else
the test's folder) as track-strip.png."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from labeler import open_dataset
from labeler.dataset.decisions import load_decisions
from labeler.dataset.sidecars import read_reviews
from tests.review.test_review_browser import browser, pytestmark, review_server  # noqa: F401
from tests.review.test_review_tracks import _longest, _track_objects


def test_a_track_opens_from_its_sample_shows_every_frame_and_a_decision_applies_to_all(
    browser,  # noqa: F811
    tracked_sequence,
    tmp_path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    dataset = Path(shutil.copytree(tracked_sequence[0] / "ds", tmp_path / "ds"))
    ds = open_dataset(dataset)
    tid = _longest(ds)
    truth = _track_objects(ds, tid)
    _, sid, oid = truth[len(truth) // 2]
    with review_server(dataset) as url:
        browser.get(f"{url}/sample/{sid}")
        browser.find_element(By.CSS_SELECTOR, f'tr.obj[data-id="{oid}"]').click()  # select the object
        link = browser.find_element(By.ID, "open-track")
        assert link.is_displayed() and link.text == f"open its track {tid} t"
        browser.find_element(By.TAG_NAME, "body").send_keys("t")
        WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/track/{tid}"))
        cards = browser.find_elements(By.CSS_SELECTOR, "#strip figure.frame")
        shown = [(c.get_attribute("data-sample"), int(c.get_attribute("data-object"))) for c in cards]
        assert shown == [(s, o) for _, s, o in truth]  # every labelled frame, in frame order
        frames = [int(re.search(r"frame (\d+)", c.text).group(1)) for c in cards]  # type: ignore[union-attr]
        assert frames == [f for f, _, _ in truth]
        WebDriverWait(browser, 10).until(
            lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalHeight", img) == 120
                for img in d.find_elements(By.CSS_SELECTOR, "#strip img")
            )
        )
        assert browser.find_element(By.ID, "depth-plot").is_displayed()
        browser.find_element(By.TAG_NAME, "body").send_keys("r")
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "status").text.startswith("saved"))
        status = browser.find_element(By.ID, "status").text
        assert status == f"saved: reject · track {tid} · {len(truth)} frames"
        badges = [c.find_element(By.CSS_SELECTOR, ".fdec .badge").text for c in cards]
        assert badges == ["reject"] * len(truth)
        shot = Path(os.environ.get("LABELER_SHOT_DIR", tmp_path)) / "track-strip.png"
        browser.save_screenshot(str(shot))
        browser.get(f"{url}/sample/{sid}")  # the frame's own page shows the object rejected
        row = browser.find_element(By.CSS_SELECTOR, f'tr.obj[data-id="{oid}"] td.odec')
        assert row.text == "reject"
    saved = [(r.sample_id, r.object_id, r.track_id, r.decision, r.user) for r in read_reviews(dataset)]
    assert saved == [(s, o, tid, "reject", "browser") for _, s, o in truth]
    assert load_decisions(open_dataset(dataset)).rejected_objects == {s: {o} for _, s, o in truth}
