"""The explorer at COCO val's size: start time, first grid in headless Chromium, and what its libraries cost.

    python -m bench.bench_explore                 # 5000 images, 100 detections each, in a temporary folder
    python -m bench.bench_explore --images 500 --keep /tmp/explore_bench

Writes a synthetic COCO-size split (``--images`` entries of 640x480, about 7.3 objects each as COCO val has,
``--dets`` detections per image: the objects jittered plus random boxes, as a model's 100 best), whose image
files are symbolic links to one real COCO image of the tests (tests/assets), then times:

* the command's start: ``python -m tools.explore`` until it prints its address (imports, reading and
  validating the files, matching every image, TIDE);
* the first grid: from ``driver.get`` in Debian's headless Chromium until the first page of cards is drawn
  with its thumbnails; then a re-sort (by Miss) and one image view;
* the installed size and import time of the server libraries and of the browser driver of the tests.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from utils.paths import REPO_ROOT as REPO

IMAGE = REPO / "tests" / "assets" / "val2017" / "000000005001.jpg"  # 640x480
SERVER_LIBS = ("starlette", "uvicorn", "anyio", "h11", "click", "idna", "sniffio")
TEST_LIBS = ("selenium", "trio", "trio-websocket", "outcome", "sortedcontainers", "attrs", "wsproto",
             "websocket-client", "urllib3", "certifi", "PySocks")


def write_split(folder: Path, n: int, dets_per_image: int, seed: int = 0) -> tuple[int, int]:
    """gt.json, dets.json and images/ (links to one 640x480 COCO image) in ``folder``; (objects, detections)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns, dets = [], [], []
    for i in range(1, n + 1):
        name = f"{i:012d}.jpg"
        images.append({"id": i, "file_name": name, "width": 640, "height": 480})
        os.symlink(IMAGE, folder / "images" / name)
        objects = []
        for _ in range(rng.poisson(7.3)):
            w, h = rng.uniform(10, 300, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            objects.append(([x, y, w, h], int(rng.integers(1, 81))))
        for box, cat in objects:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            jitter = rng.normal(0, 0.1, 4) * [box[2], box[3], box[2], box[3]]
            dets.append({"image_id": i, "category_id": cat if rng.random() < 0.8 else int(rng.integers(1, 81)),
                         "bbox": (np.array(box) + jitter).tolist(), "score": float(rng.uniform(0.2, 1))})
        for _ in range(max(dets_per_image - len(objects), 0)):
            w, h = rng.uniform(10, 300, 2)
            dets.append({"image_id": i, "category_id": int(rng.integers(1, 81)),
                         "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), float(w), float(h)],
                         "score": float(rng.uniform(0.01, 0.6))})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 81)]}
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "dets.json").write_text(json.dumps(dets))
    return len(anns), len(dets)


def installed_mb(names) -> float:
    total = 0
    for name in names:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        total += sum((Path(dist.locate_file(f))).stat().st_size for f in dist.files or []
                     if Path(dist.locate_file(f)).is_file())
    return total / 2**20


def import_seconds(modules: str) -> float:
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


GRID_READY = ("const cards = [...document.querySelectorAll('#grid .card')];"
              "return cards.length === Math.min(48, arguments[0]) && cards.every(c => "
              "c.querySelector('canvas').dataset.drawn === '1') && (document.getElementById('grid').dataset.ready"
              " || '').includes(arguments[1]);")


def timed(driver, fn, ready, timeout=300) -> float:
    start = time.perf_counter()
    fn()
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: ready(d))
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--dets", type=int, default=100, help="detections per image")
    p.add_argument("--keep", type=Path, default=None, help="write the split here and keep it (default: a temp folder)")
    args = p.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="explore_bench_"))
    start = time.perf_counter()
    objects, dets = write_split(folder, args.images, args.dets)
    print(f"split: {args.images} images, {objects} objects, {dets} detections "
          f"(dets.json {(folder / 'dets.json').stat().st_size / 2**20:.0f} MB), written in "
          f"{time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tools.explore", "--gt", str(folder / "gt.json"), "--results",
                             str(folder / "dets.json"), "--images", str(folder / "images"), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, lines = None, []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if m := re.search(r"explorer: (http://\S+/)", line):
            url = m.group(1)
            break
    if url is None:
        raise SystemExit("the explorer did not start:\n" + "\n".join(lines))
    print(f"start (python -m tools.explore until its address): {time.perf_counter() - start:.1f} s; "
          f"{[ln for ln in lines if 'matched' in ln][0].split(': ', 1)[-1]}")
    try:
        driver = browser()
        try:
            n = args.images
            first = timed(driver, lambda: driver.get(url + "#view=grid"),
                          lambda d: d.execute_script(GRID_READY, n, "sort=errors"))
            print(f"first grid (page load, /api/meta, /api/images, 48 thumbnails drawn): {first:.2f} s")
            resort = timed(driver, lambda: driver.execute_script("location.hash = '#view=grid&sort=Miss'"),
                           lambda d: d.execute_script(GRID_READY, n, "sort=Miss"))
            print(f"re-sort by Miss: {resort:.2f} s")
            page = timed(driver, lambda: driver.execute_script("location.hash = '#view=grid&sort=Miss&page=50'"),
                         lambda d: d.execute_script(GRID_READY, n, "sort=Miss") and "page 51" in
                         d.find_element("id", "page-info").text)
            print(f"page 51: {page:.2f} s")
            one = timed(driver, lambda: driver.execute_script("location.hash = '#view=image&id=17'"),
                        lambda d: d.execute_script("return !!document.querySelector('#stats-0[data-shown]')"))
            print(f"one image: {one:.2f} s")
        finally:
            driver.quit()
        rss = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ln.startswith("VmRSS")]
        print(f"server memory: {rss[0].split(':')[1].strip() if rss else '?'}")
    finally:
        proc.terminate()
        proc.wait()
        if args.keep is None:
            shutil.rmtree(folder)
    print(f"server libraries ({', '.join(SERVER_LIBS)}): {installed_mb(SERVER_LIBS):.1f} MB installed, import "
          f"{import_seconds('starlette.applications, starlette.routing, uvicorn'):.2f} s")
    print(f"browser driver of the tests ({', '.join(TEST_LIBS)}): {installed_mb(TEST_LIBS):.1f} MB installed, import "
          f"{import_seconds('selenium.webdriver'):.2f} s")
    print(f"tools.explore imports (deploy.predictor and torch included): "
          f"{import_seconds('tools.explore.launch'):.2f} s")


if __name__ == "__main__":
    main()
