"""The explorer without a browser: its catalog against runs with known TIDE errors, its endpoints on a real server
(127.0.0.1, a free port), bad requests and bad files, and that it serves nothing outside its page and the split.

The runs are tests/explore_runs.py: every error type, every object missed, fixed or broken is known by
construction; the counts at a threshold are also checked against :func:`evaluation.tide.tide_errors` on the
detections cut at that threshold.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket

import cv2
import numpy as np
import pytest

from evaluation.matching import group_by_image
from evaluation.tide import ERROR_TYPES, tide_errors
from tests.conftest import COCO_JSON, COCO_SPLIT, COCO_TINY
from tests.explore_runs import BROKEN_B, DIFF_B, ERRORS_A, FIXED_B, MISS_A, make_runs
from tools.explore.__main__ import main as explore_main
from tools.explore.catalog import Catalog, safe_image_path
from tools.explore.launch import build_explorer, check_explore_args
from tools.explore.server import Explorer
from utils.errors import UserError

IMAGES = COCO_TINY / COCO_SPLIT


@pytest.fixture(scope="module")
def gt():
    return json.loads(COCO_JSON.read_text())


@pytest.fixture(scope="module")
def runs(gt):
    return make_runs(gt)


@pytest.fixture(scope="module")
def catalog(gt, runs):
    return Catalog(gt, [("A: a", "a.json", runs[0]), ("B: b", "b.json", runs[1])], IMAGES)


@pytest.fixture(scope="module")
def server(catalog):
    explorer = Explorer(catalog, port=0).start()
    yield explorer
    explorer.stop()


def _get(server, path, *, host=None, method="GET", body=None):
    """(status, body bytes, headers) of a raw request: the path is sent as written (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.port}")
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data, dict(r.getheaders())


def _json(server, path):
    status, data, _ = _get(server, path)
    assert status == 200, (path, data)
    return json.loads(data)


# ---------------------------------------------------------------------- the catalog
def test_error_types_per_image_are_the_constructed_ones(catalog):
    counts = catalog.counts(0, 0.3)
    by_id = {im["id"]: dict(zip(ERROR_TYPES, counts[k].tolist())) for k, im in enumerate(catalog.images)}
    assert {i: c["Miss"] for i, c in by_id.items() if c["Miss"]} == MISS_A
    assert {t: sum(c[t] for c in by_id.values()) for t in ERRORS_A} == ERRORS_A
    assert by_id[333956]["Bkg"] == 1 and by_id[223747]["Dupe"] == 1 and by_id[404484]["Cls"] == 1
    assert by_id[454661]["Loc"] == 1 and by_id[223747]["Both"] == 1


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.62, 0.8, 0.97])
def test_counts_at_a_threshold_are_tide_on_the_detections_above_it(gt, runs, catalog, thr):
    """Per image and type, the catalog's counts at ``thr`` equal tide_errors run on the detections >= ``thr``."""
    for run, dets in enumerate(runs):
        kept = [d for d in dets if d["score"] >= thr]
        expected = tide_errors(group_by_image(gt, kept)).counts
        assert dict(zip(ERROR_TYPES, catalog.counts(run, thr).sum(0).tolist())) == expected
        for k, image in enumerate(group_by_image(gt, kept)):
            assert catalog.counts(run, thr)[k].tolist() == [tide_errors([image]).counts[t] for t in ERROR_TYPES]


def test_fixed_broken_and_difference_of_two_runs(catalog):
    fixed, broken = catalog.fixed_broken(0.3)
    ids = [im["id"] for im in catalog.images]
    assert {i: int(n) for i, n in zip(ids, fixed) if n} == FIXED_B
    assert {i: int(n) for i, n in zip(ids, broken) if n} == BROKEN_B
    assert {i: int(n) for i, n in zip(ids, catalog.diff(0.3)) if n} == DIFF_B


def test_sorting_and_filtering(catalog):
    def ids(**kw):
        return [catalog.images[k]["id"] for k in catalog.order(**kw)]

    assert ids(sort="Miss", thr=0.3) == [360960, 5001, 184324, 454661, 223747, 333956, 404484]  # ties by name
    assert ids(sort="Miss", thr=0.3, run=1)[:2] == [184324, 5001]  # B misses 5 on 184324, 3 on 5001
    assert ids(sort="diff", thr=0.3)[0] == 184324 and ids(sort="diff", desc=False, thr=0.3)[0] == 360960
    assert ids(sort="fixed", thr=0.3)[0] == 360960
    by_name = [im["id"] for im in sorted(catalog.images, key=lambda im: im["file_name"])]
    assert ids(sort="name", desc=False) == by_name and ids(sort="name", desc=True) == by_name[::-1]
    assert ids(sort="Bkg", err="Bkg", thr=0.3) == [333956]
    assert ids(err="Bkg", run=1, thr=0.3) == []
    assert set(ids(cls=17)) == {223747, 404484}  # the cat: a gt in 223747, a Cls error in 404484
    assert ids(cls=17, thr=0.8) == [223747]  # the Cls error scores 0.7
    ap = catalog.image_ap(0)
    worst = ids(sort="ap", desc=False)
    assert [round(ap[catalog.index[i]], 6) for i in worst] == sorted(round(v, 6) for v in ap)


def test_per_image_ap_is_tides(gt, runs, catalog):
    tide = tide_errors(group_by_image(gt, runs[0]))
    assert {im["id"]: catalog.image_ap(0)[k] for k, im in enumerate(catalog.images)} == pytest.approx(tide.image_ap50)


def test_image_paths_stay_inside_the_folder(tmp_path):
    assert safe_image_path(tmp_path, "a/b.jpg") == tmp_path / "a" / "b.jpg"
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "..", ""):
        assert safe_image_path(tmp_path, bad) is None, bad


# ---------------------------------------------------------------------- the endpoints
def test_meta_and_grid(server, catalog, runs):
    meta = _json(server, "/api/meta")
    assert [r["name"] for r in meta["runs"]] == ["A: a", "B: b"] and meta["live"] is None
    assert meta["runs"][0]["counts"] == tide_errors(group_by_image(json.loads(COCO_JSON.read_text()), runs[0])).counts
    page = _json(server, "/api/images?sort=Miss&thr=0.3&limit=2")
    assert page["total"] == 7 and page["ids"][:4] == [360960, 5001, 184324, 454661]
    first = page["items"][0]
    assert len(page["items"]) == 2 and first["id"] == 360960 and first["counts"][0]["Miss"] == 4
    assert (first["fixed"], first["broken"]) == (3, 1) and first["errors"] == [4, 2] and first["has_image"]
    assert len(first["dets"]) == sum(d["image_id"] == 360960 and d["score"] >= 0.3 for d in runs[0])
    assert _json(server, "/api/images?sort=Miss&thr=0.3&offset=6&limit=5")["items"][0]["id"] == 404484


def test_one_image_has_every_detection_with_its_type(server, runs):
    data = _json(server, "/api/image/223747")
    dets = data["runs"][0]["dets"]
    assert len(dets) == sum(d["image_id"] == 223747 for d in runs[0])
    types = sorted(ERROR_TYPES[d["type"]] if d["type"] >= 0 else "TP" for d in dets)
    assert types == ["Both", "Dupe", "TP", "TP", "TP"]
    dupe = next(d for d in dets if d["type"] == ERROR_TYPES.index("Dupe"))
    cat = data["gt"][dupe["iou_gt"]]
    assert cat[4] == 17 and 0.9 < dupe["iou"] < 1 and dupe["score"] == 0.6  # the cat's box moved by (4, 3)


def test_downloads_are_the_results_as_read(server, runs):
    status, body, headers = _get(server, "/api/detections?id=5001&thr=0.7&run=1")
    assert status == 200 and "attachment" in headers["content-disposition"]
    expected = [d for d in runs[1] if d["image_id"] == 5001 and d["score"] >= 0.7]
    key = lambda d: (d["score"], d["bbox"])  # noqa: E731
    assert sorted(json.loads(body), key=key) == sorted(expected, key=key)
    everything = json.loads(_get(server, "/api/detections?thr=0")[1])
    assert len(everything) == len(runs[0])
    persons = json.loads(_get(server, "/api/detections?thr=0.5&cls=1")[1])
    assert len(persons) == sum(d["category_id"] == 1 and d["score"] >= 0.5 for d in runs[0])


def test_images_and_thumbnails(server):
    status, body, headers = _get(server, "/image/5001")
    assert status == 200 and body == (IMAGES / "000000005001.jpg").read_bytes()
    status, body, headers = _get(server, "/thumb/5001")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert len(body) < len((IMAGES / "000000005001.jpg").read_bytes())
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)  # 640x480 halved
    small = cv2.imdecode(np.frombuffer(_get(server, "/thumb/404484")[1], np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (240, 320, 3)  # 320x240: decoded at full size


@pytest.mark.parametrize("query, word", [("sort=foo", "sort"), ("thr=abc", "thr"), ("run=2", "run"),
                                         ("cls=999", "cls"), ("err=Oops", "err"), ("limit=0", "limit"),
                                         ("offset=-1", "offset"), ("desc=5", "desc"), ("thr=nan", "thr")])
def test_bad_queries_are_400_naming_the_parameter(server, query, word):
    status, body, _ = _get(server, f"/api/images?{query}")
    assert status == 400 and word in json.loads(body)["error"]


@pytest.mark.parametrize("path", [
    "/image/../../../etc/passwd", "/image/..%2F..%2F..%2Fetc%2Fpasswd", "/static/../server.py",
    "/static/..%2Fserver.py", "/static/..%2F..%2F..%2Fcatalog.py", "/static/index.html/../../server.py",
    "/thumb/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "/static/catalog.py", "/tools/explore/server.py",
    "/annotations/instances_val2017.json", "/000000005001.jpg", "/image/000000005001.jpg", "/image/-1",
    "/image/123456789", "/api/image/42", "//etc/passwd", "/static/", "/static/style.css%00.py"])
def test_nothing_outside_the_page_and_the_split_is_served(server, path):
    status, body, _ = _get(server, path)
    assert status in (403, 404), (path, status, body[:200])
    assert b"root:" not in body and b"import" not in body


def test_other_host_names_are_refused(server):
    assert _get(server, "/api/meta", host="evil.example")[0] == 400
    assert _get(server, "/api/meta", host=f"localhost:{server.port}")[0] == 200


def test_predict_without_a_model_is_404(server):
    status, body, _ = _get(server, "/api/predict", method="POST", body=b"\xff\xd8")
    assert status == 404 and "--weight" in json.loads(body)["error"]


def test_a_gt_entry_outside_the_folder_or_missing_is_listed_not_served(gt, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (tmp_path / "secret.jpg").write_bytes((IMAGES / "000000404484.jpg").read_bytes())
    shutil.copy(IMAGES / "000000005001.jpg", folder)
    bad = json.loads(json.dumps(gt))
    names = {5001: "000000005001.jpg", 404484: "../secret.jpg"}
    for im in bad["images"]:
        im["file_name"] = names.get(im["id"], im["file_name"])  # the others are missing from the folder
    explorer = Explorer(Catalog(bad, [("A", "a.json", [])], folder), port=0).start()
    try:
        assert _get(explorer, "/image/5001")[0] == 200
        assert _get(explorer, "/image/404484")[0] == 404 and _get(explorer, "/thumb/404484")[0] == 404
        assert _get(explorer, "/thumb/223747")[0] == 404
        items = _json(explorer, "/api/images?sort=name&desc=0&limit=10")["items"]
        assert {i["id"]: i["has_image"] for i in items} == {i: i == 5001 for i in names | {223747: 0, 333956: 0,
                                                                                            360960: 0, 184324: 0,
                                                                                            454661: 0}}
        assert items[0]["counts"][0]["Miss"] > 0  # no detections: every object missed, the server still answers
    finally:
        explorer.stop()


# ---------------------------------------------------------------------- bad files and flags: one line each
@pytest.fixture
def files(tmp_path, runs):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(runs[0]))
    return a


def _explorer_error(argv) -> str:
    with pytest.raises(UserError) as e:
        explore_main(argv)
    return str(e.value)


def test_results_of_another_ground_truth(tmp_path, runs):
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**d, "image_id": d["image_id"] + 1} for d in runs[0][:3]]))
    message = _explorer_error(["--gt", str(COCO_JSON), "--results", str(other), "--port", "0"])
    assert str(other) in message and "image" in message and "\n" not in message


def test_not_json_missing_files_and_folders(tmp_path, files):
    junk = tmp_path / "junk.json"
    junk.write_text("this is not json")
    assert "not a valid json" in _explorer_error(["--gt", str(junk), "--results", str(files)])
    assert "not a valid json" in _explorer_error(["--gt", str(COCO_JSON), "--results", str(junk), "--port", "0"])
    assert "no such file" in _explorer_error(["--gt", str(tmp_path / "nope.json"), "--results", str(files)])
    assert "no such folder" in _explorer_error(["--gt", str(COCO_JSON), "--results", str(files),
                                                "--images", str(tmp_path / "nope")])
    assert "one or two" in _explorer_error(["--gt", str(COCO_JSON)] + ["--results", str(files)] * 3)
    assert "no such file" in _explorer_error(["--gt", str(COCO_JSON), "--results", str(files), "--port", "0",
                                              "--weight", str(tmp_path / "nope.pth")])


def test_a_port_in_use_is_one_line(files, gt):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        assert f"port {port} on 127.0.0.1 is in use" in _explorer_error(
            ["--gt", str(COCO_JSON), "--results", str(files), "--port", str(port)])
    finally:
        taken.close()


def test_eval_explore_needs_a_detections_file_before_it_evaluates():
    args = argparse.Namespace(explore=True, results=None, save_results=None, dataset=None)
    with pytest.raises(UserError, match="--explore shows a detections file: add --save_results FILE"):
        check_explore_args(args)
    with pytest.raises(UserError, match="COCO-format ground truth; -d voc"):
        check_explore_args(argparse.Namespace(explore=True, results=None, save_results="d.json", dataset="voc"))
    check_explore_args(argparse.Namespace(explore=True, results=None, save_results="d.json", dataset="coco"))
    check_explore_args(argparse.Namespace(explore=False, results=None, save_results=None, dataset="voc"))


def test_build_explorer_serves_the_two_runs(gt, files, tmp_path, runs):
    b = tmp_path / "b.json"
    b.write_text(json.dumps(runs[1]))
    explorer = build_explorer(gt, str(COCO_JSON), [files, b], IMAGES, port=0).start()
    try:
        meta = _json(explorer, "/api/meta")
        assert [r["name"] for r in meta["runs"]] == ["A: a", "B: b"]
        assert [r["AP50"] for r in meta["runs"]] == pytest.approx(
            [tide_errors(group_by_image(gt, r)).ap50 for r in runs])
    finally:
        explorer.stop()


def test_numbers_are_finite_json(server):
    """NaN AP (an image without gt) must not reach the page as NaN, which JSON.parse refuses."""
    status, body, _ = _get(server, "/api/images?sort=ap&limit=7")
    assert status == 200 and b"NaN" not in body and np.isfinite(json.loads(body)["total"])
