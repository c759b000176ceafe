"""The explorer in a real headless Chromium (Debian's, driven by Selenium through Debian's chromedriver).

``python -m tools.explore`` runs as a subprocess on 127.0.0.1 (a free port) over the test images, two hand-made
runs with known TIDE errors (tests/explore_runs.py) and the small trained model tests/fixtures/quickstart_tiny
for live predictions. The browser resolves no host name but 127.0.0.1 and starts no background traffic. Each view
is saved as a screenshot under the test's temporary folder. ``eval.py --explore`` is run end to end too.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from deploy.predictor import Predictor
from tests.conftest import COCO_JSON, COCO_SPLIT, COCO_TINY, REPO
from tests.explore_runs import MISS_A, make_runs

MODEL = REPO / "tests" / "fixtures" / "quickstart_tiny" / "model.pth"
MISS_ORDER = [360960, 5001, 184324, 454661, 223747, 333956, 404484]  # by A's misses, ties by file name
URL_LINE = re.compile(r"explorer: (http://127\.0\.0\.1:\d+/)")
INSTALL = "Chromium is missing (install it with: apt-get install chromium chromium-driver; .ci/run does)"


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(INSTALL)
    return chromium, driver


def _start(args: list[str], env_extra: dict | None = None, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """A command that serves the explorer, and the address it prints; its output is kept for a failure message."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if m := URL_LINE.search(line):
                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
                return proc, m.group(1)
    finally:
        timer.cancel()
    proc.kill()
    raise AssertionError(f"{args} printed no address:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def runs():
    return make_runs(json.loads(COCO_JSON.read_text()))


@pytest.fixture(scope="module")
def explorer(tmp_path_factory, runs):
    folder = tmp_path_factory.mktemp("runs")
    for name, dets in zip("ab", runs):
        (folder / f"{name}.json").write_text(json.dumps(dets))
    proc, url = _start(["-m", "tools.explore", "--gt", str(COCO_JSON), "--results", str(folder / "a.json"),
                        "--results", str(folder / "b.json"), "--weight", str(MODEL), "--port", "0"])
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads):
    chromium, chromedriver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--force-device-scale-factor=1", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # nothing beyond 127.0.0.1
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(chromedriver), options=options)
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield d
    d.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def _wait(driver, condition, what: str, timeout: float = 30):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))
    except TimeoutException:
        logs = driver.get_log("browser")
        raise AssertionError(f"timed out waiting for {what}; status: "
                             f"{driver.find_element(By.ID, 'status').text!r}; console: {logs}") from None


def _open(driver, url: str, view: str):
    """Load the page afresh at ``#<view>``."""
    driver.get("about:blank")
    driver.get(f"{url}#{view}")


def _cards(driver) -> list[dict]:
    return driver.execute_script("return [...document.querySelectorAll('#grid .card')].map(c => ({id: +c.dataset.id,"
                                 " miss: +c.dataset.miss, drawn: c.querySelector('canvas').dataset.drawn === '1'}))")


def _grid(driver, expected: int, ids: list | None = None) -> list[dict]:
    """The grid's cards (id, miss, drawn) once ``expected`` cards (``ids``, in order) are there, thumbnails drawn."""
    def ready(d):
        cards = _cards(d)
        done = len(cards) == expected and all(c["drawn"] for c in cards)
        return cards if done and (ids is None or [c["id"] for c in cards] == ids) else False
    return _wait(driver, ready, f"{expected} cards" + (f" in the order {ids}" if ids else ""))


def _image(driver, image_id: int, panels: int = 2):
    _wait(driver, lambda d: f"(id {image_id})" in d.find_element(By.ID, "image-name").text
          and len(d.find_elements(By.CSS_SELECTOR, ".stats[data-shown]")) == panels, f"image {image_id}")


def _boxes(driver, panel: int = 0) -> int:
    return int(driver.find_element(By.ID, f"canvas-{panel}").get_attribute("data-boxes"))


def _count(dets, image_id, thr, cls=None) -> int:
    return sum(d["image_id"] == image_id and d["score"] >= thr and (cls is None or d["category_id"] == cls)
               for d in dets)


def _shot(driver, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    return path


def _set_slider(driver, value: float):
    driver.execute_script("const s = document.getElementById('thr'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('input'));", str(value))


def _download(driver, downloads: Path, element_id: str) -> list:
    for f in downloads.iterdir():
        f.unlink()
    driver.find_element(By.ID, element_id).click()
    files = _wait(driver, lambda d: [f for f in downloads.iterdir() if f.suffix == ".json"], "a download")
    time.sleep(0.2)  # the file is complete once it has its name; a moment for the write to land
    return json.loads(files[0].read_text())


# ---------------------------------------------------------------------- the grid
def test_the_page_loads_and_shows_the_grid(driver, explorer, shots):
    _open(driver, explorer, "view=grid")
    cards = _grid(driver, 7)
    assert {c["id"] for c in cards} == {im["id"] for im in json.loads(COCO_JSON.read_text())["images"]}
    assert "of 7" in driver.find_element(By.ID, "page-info").text
    # a thumbnail is drawn: its canvas has more than one colour
    spread = driver.execute_script("const c = document.querySelector('#grid canvas');"
                                   "const p = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                   "let lo = 255, hi = 0; for (let i = 0; i < p.length; i += 4) "
                                   "{ lo = Math.min(lo, p[i]); hi = Math.max(hi, p[i]); } return hi - lo;")
    assert spread > 100
    _shot(driver, shots, "grid")


def test_sorting_by_miss_puts_the_image_with_the_most_misses_first(driver, explorer):
    _open(driver, explorer, "view=grid")
    _grid(driver, 7)
    Select(driver.find_element(By.ID, "sort")).select_by_value("Miss")
    _wait(driver, lambda d: "sort=Miss" in d.current_url, "the sort in the URL")
    cards = _grid(driver, 7, MISS_ORDER)
    assert [c["miss"] for c in cards] == [MISS_A.get(i, 0) for i in MISS_ORDER]


def test_sorting_by_the_difference_of_the_runs(driver, explorer):
    _open(driver, explorer, "view=grid&sort=diff&thr=0.3")
    assert _grid(driver, 7)[0]["id"] == 184324  # B breaks 3 objects there
    driver.find_element(By.ID, "desc").click()
    _wait(driver, lambda d: "desc=0" in d.current_url, "the direction in the URL")
    assert _wait(driver, lambda d: (c := _grid(d, 7)) and c[0]["id"] == 360960 and c, "B's best image first")


# ---------------------------------------------------------------------- one image
def test_the_threshold_slider_changes_the_boxes_drawn(driver, explorer, runs, shots):
    _open(driver, explorer, "view=image&id=5001&thr=0.3")
    _image(driver, 5001)
    assert _boxes(driver) == _count(runs[0], 5001, 0.3) > 0
    _set_slider(driver, 0.8)
    assert _boxes(driver) == _count(runs[0], 5001, 0.8) < _count(runs[0], 5001, 0.3)
    assert _boxes(driver, 1) == _count(runs[1], 5001, 0.8)
    assert "thr=0.80" in driver.current_url
    slider = driver.find_element(By.ID, "thr")
    slider.send_keys(Keys.ARROW_LEFT * 20)  # the keyboard on the slider: 0.80 -> 0.60, and the image stays
    _wait(driver, lambda d: d.find_element(By.ID, "thr").get_attribute("value") == "0.6", "the slider at 0.6")
    assert _boxes(driver) == _count(runs[0], 5001, 0.6) and "id=5001" in driver.current_url
    _shot(driver, shots, "image")


def test_the_class_filter_hides_the_other_classes(driver, explorer, runs):
    _open(driver, explorer, "view=image&id=5001&thr=0")
    _image(driver, 5001)
    assert _boxes(driver) == _count(runs[0], 5001, 0)
    Select(driver.find_element(By.ID, "cls")).select_by_visible_text("person")
    assert _boxes(driver) == _count(runs[0], 5001, 0, cls=1) < _count(runs[0], 5001, 0)
    stats = driver.find_element(By.ID, "stats-0")
    assert int(stats.get_attribute("data-shown")) == _count(runs[0], 5001, 0, cls=1)
    # in the grid, the class filter keeps the images with that class: scissors are in 5001 only
    _open(driver, explorer, "view=grid&cls=87")
    assert [c["id"] for c in _grid(driver, 1)] == [5001]


def test_side_by_side_shows_two_canvases_and_the_difference(driver, explorer, shots):
    _open(driver, explorer, "view=image&id=360960&thr=0.3")
    _image(driver, 360960)
    canvases = driver.find_elements(By.CSS_SELECTOR, "#panels canvas")
    assert len(canvases) == 2 and all(c.is_displayed() and c.size["width"] > 200 for c in canvases)
    diff = driver.find_element(By.ID, "diff")
    assert (diff.get_attribute("data-fixed"), diff.get_attribute("data-broken"), diff.get_attribute("data-diff")) \
        == ("3", "1", "-2")
    assert "B fixes 3, breaks 1" in diff.text
    assert [driver.find_element(By.ID, f"stats-{i}").get_attribute("data-miss") for i in (0, 1)] == ["4", "2"]
    _shot(driver, shots, "side_by_side")


def test_hovering_a_box_shows_its_class_score_iou_and_error_type(driver, explorer):
    _open(driver, explorer, "view=image&id=333956&thr=0.3")
    _image(driver, 333956)
    canvas = driver.find_element(By.ID, "canvas-0")
    width, height = driver.execute_script("const c = arguments[0], r = c.getBoundingClientRect();"
                                          "return [r.width, r.height];", canvas)
    scale = width / 428  # the image is 428 px wide; the Bkg box is [300, 20, 80, 80]
    ActionChains(driver).move_to_element_with_offset(canvas, int(340 * scale - width / 2),
                                                     int(60 * scale - height / 2)).perform()
    tip = driver.find_element(By.ID, "tooltip")
    _wait(driver, lambda d: tip.is_displayed(), "the tooltip")
    assert "bench" in tip.text and "score 0.900" in tip.text and "error: Bkg" in tip.text and "IoU 0.000" in tip.text


def test_the_keyboard_moves_to_the_next_and_previous_image(driver, explorer):
    _open(driver, explorer, "view=grid&sort=Miss&thr=0.3")
    _grid(driver, 7, MISS_ORDER)
    driver.find_element(By.CSS_SELECTOR, "#grid .card").click()
    _image(driver, MISS_ORDER[0])
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    _image(driver, MISS_ORDER[1])
    assert driver.find_element(By.ID, "image-pos").text == "2 / 7"
    body.send_keys(Keys.ARROW_RIGHT)
    _image(driver, MISS_ORDER[2])
    body.send_keys(Keys.ARROW_LEFT)
    _image(driver, MISS_ORDER[1])
    body.send_keys(Keys.ESCAPE)
    _grid(driver, 7)


def test_a_view_is_linked_by_its_url(driver, explorer, runs):
    _open(driver, explorer, "view=image&id=5001&thr=0.75&cls=1")
    _image(driver, 5001)
    assert driver.find_element(By.ID, "thr").get_attribute("value") == "0.75"
    assert Select(driver.find_element(By.ID, "cls")).first_selected_option.text == "person"
    assert _boxes(driver) == _count(runs[0], 5001, 0.75, cls=1)


def test_the_current_view_downloads_as_coco_json(driver, explorer, runs, downloads):
    _open(driver, explorer, "view=image&id=5001&thr=0.7")
    _image(driver, 5001)
    got = _download(driver, downloads, "download-1")
    expected = [d for d in runs[1] if d["image_id"] == 5001 and d["score"] >= 0.7]
    key = lambda d: (d["score"], d["bbox"])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


# ---------------------------------------------------------------------- live predictions
def test_dropping_an_image_gives_the_predictors_detections(driver, explorer, downloads, shots):
    path = COCO_TINY / COCO_SPLIT / "000000404484.jpg"
    _open(driver, explorer, "view=live&thr=0")
    _wait(driver, lambda d: "pytorch fp32" in d.find_element(By.ID, "live-info").text, "the live model")
    driver.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const data = new DataTransfer(); data.items.add(new File([bytes], arguments[1], {type: 'image/jpeg'}));"
        "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,"
        " cancelable: true}));", base64.b64encode(path.read_bytes()).decode(), path.name)
    info = _wait(driver, lambda d: d.find_element(By.ID, "live-info") if d.find_element(By.ID, "live-info")
                 .get_attribute("data-done") == "1" else False, "the live detections", timeout=60)
    assert re.search(r"model \d+\.\d ms \(pytorch fp32 on cpu\)", info.text)
    det = Predictor(MODEL).predict(path)
    assert int(info.get_attribute("data-count")) == len(det["scores"]) > 0
    assert int(driver.find_element(By.ID, "live-canvas").get_attribute("data-boxes")) == len(det["scores"])
    _shot(driver, shots, "live")
    got = _download(driver, downloads, "download")
    boxes = np.array([d["bbox"] for d in got]).reshape(-1, 4)
    expected = np.concatenate([det["boxes"][:, :2], det["boxes"][:, 2:] - det["boxes"][:, :2]], axis=1)
    np.testing.assert_allclose(boxes, expected, atol=1e-3)
    np.testing.assert_allclose([d["score"] for d in got], det["scores"], rtol=1e-5)
    assert [d["category_id"] for d in got] == det["labels"].tolist()  # the model's classes are not COCO's
    # picking a file does the same as dropping one
    other = COCO_TINY / COCO_SPLIT / "000000223747.jpg"
    driver.find_element(By.ID, "file").send_keys(str(other))
    _wait(driver, lambda d: other.name in d.find_element(By.ID, "live-info").text
          and d.find_element(By.ID, "live-info").get_attribute("data-done") == "1", "the picked file's detections")
    assert int(driver.find_element(By.ID, "live-info").get_attribute("data-count")) == \
        len(Predictor(MODEL).predict(other)["scores"])


def test_a_file_that_is_not_an_image_is_one_line(driver, explorer):
    _open(driver, explorer, "view=live")
    _wait(driver, lambda d: "pytorch fp32" in d.find_element(By.ID, "live-info").text, "the live model")
    driver.execute_script("const data = new DataTransfer(); data.items.add(new File(['not an image'], 'notes.txt'));"
                          "document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: data,"
                          " bubbles: true, cancelable: true}));")
    _wait(driver, lambda d: "notes.txt: not an image file" in d.find_element(By.ID, "status").text, "the error")


# ---------------------------------------------------------------------- what is served
def test_path_traversal_is_refused(driver, explorer):
    _open(driver, explorer, "view=grid")
    statuses = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(['/image/..%2F..%2F..%2Fetc%2Fpasswd', '/static/..%2Fserver.py', '/static/..%2F__main__.py',"
        " '/thumb/..%2F..%2Fetc%2Fpasswd', '/etc/passwd'].map(u => fetch(u).then(r => r.status))).then(done);")
    assert all(s in (403, 404) for s in statuses), statuses
    port = int(explorer.rsplit(":", 1)[1].strip("/"))
    for raw in ("/image/../../../etc/passwd", "/static/../server.py", "/static/../../../../etc/passwd"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", raw)
        r = conn.getresponse()
        assert r.status in (403, 404) and b"root:" not in r.read(), raw
        conn.close()


def test_eval_explore_serves_the_evaluated_detections(tmp_path, runs):
    (tmp_path / "a.json").write_text(json.dumps(runs[0]))
    proc, url = _start(["eval.py", "-d", "coco", "--root", str(COCO_TINY), "--split", COCO_SPLIT, "--results",
                        str(tmp_path / "a.json"), "--out", str(tmp_path / "metrics.json"), "--explore"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")), timeout=30)
        conn.request("GET", "/api/images?sort=Miss&thr=0.3&limit=1")
        assert json.loads(conn.getresponse().read())["ids"] == MISS_ORDER
        conn.close()
    finally:
        _stop(proc)
    assert (tmp_path / "metrics.json").is_file()
