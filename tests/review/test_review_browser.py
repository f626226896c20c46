"""`labeler review` in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
selenium. A keypress rejects a sample, a click and a keypress flag an object; the reviews table holds both
after the server is restarted, and the next train-heads leaves the sample out. `.ci/install-browser.sh`
installs the browser; without it these tests skip with one line saying so."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from labeler import open_dataset
from labeler.dataset.sidecars import read_reviews

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no chromium / chromedriver (apt-get install chromium chromium-driver: .ci/install-browser.sh)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def review_server(dataset: Path) -> Iterator[str]:
    """`labeler review DATASET` in a child process; yields its URL once it answers (at most 30 s)."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-c",
        "from labeler.cli.main import app; app()",
        "review",
        str(dataset),
        "--port",
        str(port),
        "--user",
        "browser",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            if proc.poll() is not None:
                raise AssertionError(
                    f"labeler review exited: {proc.stdout.read().decode() if proc.stdout else ''}"
                )
            try:
                urllib.request.urlopen(url + "/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dataset(tmp_path_factory, tmp_path) -> Path:
    """A copy of `make dataset`'s demo dataset where there is one (LABELER_REVIEW_DATASET, else
    datasets/demo), else the tests' tiny one."""
    import os

    from tests.train.conftest import make_tiny_dataset

    made = Path(os.environ.get("LABELER_REVIEW_DATASET", REPO / "datasets" / "demo"))
    source = made if (made / "manifest.json").is_file() else make_tiny_dataset(tmp_path_factory.getbasetemp())
    shutil.copytree(source, tmp_path / "ds")
    return tmp_path / "ds"


def _text_becomes(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_element("id", element_id).text == text)


def test_keypress_rejects_a_sample_kept_across_restarts_and_training_skips_it(browser, dataset, tmp_path):
    from selenium.webdriver.common.by import By
    from typer.testing import CliRunner

    from labeler.cli.main import app

    ds = open_dataset(dataset)
    sid = ds.sample_ids[-1]
    oid = ds[len(ds) - 1].objects[0].id
    with review_server(dataset) as url:
        browser.get(url + "/")
        assert f'data-sample="{sid}"' in browser.page_source
        browser.get(f"{url}/sample/{sid}")
        assert browser.find_element(By.ID, "sample-decision").text == "undecided"
        browser.find_element(By.TAG_NAME, "body").send_keys("r")
        _text_becomes(browser, "status", "saved: reject · sample")
        browser.find_element(By.CSS_SELECTOR, f'tr.obj[data-id="{oid}"]').click()
        browser.find_element(By.TAG_NAME, "body").send_keys("f")
        _text_becomes(browser, "status", f"saved: flag · object {oid}")
        assert (
            browser.find_element(By.ID, "reviewed").text == "reviewed: 1 sample (1 reject), 1 object (1 flag)"
        )
        browser.save_screenshot(str(tmp_path / "sample.png"))
    saved = [(r.sample_id, r.object_id, r.decision, r.user) for r in read_reviews(dataset)]
    assert saved == [(sid, None, "reject", "browser"), (sid, oid, "flag", "browser")]
    with review_server(dataset) as url:  # a new process: everything comes from the reviews table
        browser.get(f"{url}/sample/{sid}")
        assert browser.find_element(By.ID, "sample-decision").text == "reject"
        row = browser.find_element(By.CSS_SELECTOR, f'tr.obj[data-id="{oid}"] td.odec')
        assert row.text == "flag"
        browser.get(url + "/?decision=reject")
        assert (
            browser.page_source.count("data-sample=") == 1 and f'data-sample="{sid}"' in browser.page_source
        )
    run = tmp_path / "run"  # the next train-heads (tiny random ViT, one epoch) neither trains nor scores it
    res = CliRunner().invoke(
        app,
        ["train-heads", str(dataset), "--out", str(run), "--backbone", "tiny", "--input-size", "56"]
        + ["--epochs", "1", "--workers", "0", "--previews", "0", "--heldout-frac", "0.25"],
    )
    assert res.exit_code == 0, res.output
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["heldout"]) == sorted(set(ds.sample_ids) - {sid})
    assert json.loads((run / "config.json").read_text())["rejected_left_out"] == [sid]


def test_pointer_readout_and_layer_keys(browser, dataset):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = open_dataset(dataset)[0]
    with review_server(dataset) as url:
        browser.get(f"{url}/sample/{s.sample_id}")
        stack = browser.find_element(By.ID, "stack")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script("return ids !== null"))
        box = stack.rect
        x, y = int(s.depth_m.shape[1] * 0.5), int(s.depth_m.shape[0] * 0.5)
        ActionChains(browser).move_to_element_with_offset(
            stack,
            int((x + 0.5) * box["width"] / s.depth_m.shape[1] - box["width"] / 2),
            int((y + 0.5) * box["height"] / s.depth_m.shape[0] - box["height"] / 2),
        ).perform()
        text = browser.find_element(By.ID, "readout").text
        px, py = (int(v) for v in text.split(" · ")[0].split()[1::2])  # "x 64 y 47 · depth ..."
        assert abs(px - x) <= 1 and abs(py - y) <= 1
        z, o = s.depth_m[py, px], int(s.instance_ids[py, px])
        assert (f"depth {z:.3f} m" in text) if z == z else ("depth invalid" in text)
        assert text.endswith(f"object {o}") if o else text.endswith("no object")
        assert not browser.find_element(By.ID, "img-depth").is_displayed()
        browser.find_element(By.TAG_NAME, "body").send_keys("3")
        assert browser.find_element(By.ID, "img-depth").is_displayed()


def test_more_like_this_and_near_duplicates(browser, tmp_path):
    """Embed (tiny random-init ViT) and curate a dataset with three copies of one pair; on a copy's page the
    near-duplicates list names the other two, and clicking "more like this" lists them first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from labeler.review.curate import curate
    from tests.review.test_embed_curate import copies_dataset, tiny_embed

    source = copies_dataset.__wrapped__(tmp_path_factory=_Factory(tmp_path))
    tiny_embed(source)
    curate(source, n_diverse=3, n_outliers=1)
    ids = open_dataset(source).sample_ids
    with review_server(source) as url:
        browser.get(f"{url}/sample/{ids[0]}")
        dups = browser.find_element(By.ID, "near-dups").text.split()
        assert sorted(dups) == sorted(ids[1:3])
        browser.find_element(By.ID, "more-like-this").click()
        WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#similar a.similar"))
        shown = [a.get_attribute("data-sample") for a in browser.find_elements(By.CSS_SELECTOR, "#similar a")]
        assert sorted(shown[:2]) == sorted(ids[1:3]) and len(shown) == len(ids) - 1
        browser.find_element(By.CSS_SELECTOR, "#similar a.similar").click()  # a result opens its sample
        WebDriverWait(browser, 10).until(lambda d: "/sample/" + shown[0] in d.current_url)


class _Factory:
    """tmp_path_factory's mktemp for calling a module fixture's function directly."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def mktemp(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        return path


def test_sample_page_fits_image_and_objects_side_by_side(browser, tmp_path):
    """A 1280x720 sample at a 1400x900 window: the object list sits beside the image, inside the window."""
    from selenium.webdriver.common.by import By

    from data_schema.commands import PseudoLabelConfig
    from pipelines.pseudo_label import run_pseudo_label
    from tests.conftest import identity_calibration_yaml, write_plane_pairs

    write_plane_pairs(tmp_path / "pairs", 1, 1280, 720, seed=2)
    ds = tmp_path / "ds"
    calib = identity_calibration_yaml(tmp_path / "calib.yaml", 1280, 720, fx=900.0)
    run_pseudo_label(
        PseudoLabelConfig(
            inputs=tmp_path / "pairs", calib=calib, out=ds, scheduler="sync", previews=False, progress=False
        )
    )
    sid = open_dataset(ds).sample_ids[0]
    browser.set_window_size(1400, 900)
    try:
        with review_server(ds) as url:
            browser.get(f"{url}/sample/{sid}")
            stack = browser.find_element(By.ID, "stack").rect
            panel = browser.find_element(By.CSS_SELECTOR, ".panel").rect
            width = browser.execute_script("return window.innerWidth")
            height = browser.execute_script("return window.innerHeight")
            browser.save_screenshot(str(tmp_path / "layout.png"))
            shutil.copy(
                tmp_path / "layout.png",
                Path(__import__("os").environ.get("LABELER_SHOT_DIR", tmp_path)) / "review-1400x900.png",
            )
        assert panel["x"] >= stack["x"] + stack["width"]  # beside, not below
        assert panel["x"] + panel["width"] <= width and stack["y"] + stack["height"] <= height
        assert abs(stack["height"] / stack["width"] - 720 / 1280) < 0.01  # scaled, not distorted
    finally:
        browser.set_window_size(1400, 1000)
