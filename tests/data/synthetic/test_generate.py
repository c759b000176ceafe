"""data/synthetic/generate.py: the COCO folder of a data.synthetic config, byte for byte the same for the same config
and seed, cached by its parameters, in process or with worker processes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from config.schema import SyntheticConfig
from data.synthetic import generate
from data.synthetic.generate import generate_synthetic_coco
from data.synthetic.scenes import COCO_STATS
from data.synthetic.shapes import SHAPE_CLASSES
from tests.conftest import REPO

SMALL = SyntheticConfig(num_train=10, num_val=5, image_size=(96, 128))


def _cfg(**changes) -> SyntheticConfig:
    return dataclasses.replace(SMALL, **changes)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("cfg, train_json, manifest", [
    (SyntheticConfig(num_train=20, num_val=5, image_size=(64, 80), seed=3, num_objects=(1, 4), min_box=12, max_box=40),
     "a016b202745fc13d17686a7d6b7a70bdf23b5b6544bc6e3797e55de7c1524af8",
     "28ed3530d3389afb78e0b389e109020c1b68e6dc8243ef2eae0035362b0a6133"),
    (SyntheticConfig(num_train=8, num_val=2, seed=2, stats="coco"),
     "c3e2b302c9d8395b7b7cd0add7b89cc520e38642db7a5610d4cc64ab0c3b91c7",
     "a51c3b1eb53bae28aafa5e8791cbdbaab0c213fbe43d8d102301412d66215782"),
], ids=["ranges", "coco_stats"])
def test_the_same_config_and_seed_give_the_recorded_files(tmp_path, cfg, train_json, manifest):
    """The annotations and manifest the generator wrote for these configs when the committed ablation caches were
    made (sha256 recorded from data/synthetic.py at commit 7df057a, before it became this package): a change of
    the rendering or the drawing order that moves a box fails here (the JPEG bytes also depend on the encoder)."""
    root = generate_synthetic_coco(tmp_path / "ds", cfg, workers=0)
    assert (_sha256(root / "annotations" / "instances_train.json"), _sha256(root / "manifest.json")) == \
        (train_json, manifest)


def test_generate_deterministic_and_val_independent(tmp_path):
    a = generate_synthetic_coco(tmp_path / "a", _cfg(seed=3), workers=0)
    b = generate_synthetic_coco(tmp_path / "b", _cfg(seed=3), workers=0)
    c = generate_synthetic_coco(tmp_path / "c", _cfg(seed=4), workers=0)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb  # byte-identical json, manifest and images
    assert fa["annotations/instances_train.json"] != fc["annotations/instances_train.json"]
    assert fa["annotations/instances_val.json"] != fc["annotations/instances_val.json"]
    # held-out split does not depend on num_train; train images form a prefix
    d = generate_synthetic_coco(tmp_path / "d", _cfg(seed=3, num_train=4), workers=0)
    fd = _files(d)
    val = {k: v for k, v in fa.items() if k.startswith("val/") or k.endswith("instances_val.json")}
    assert val == {k: v for k, v in fd.items() if k in val}
    assert fd["train/000003.jpg"] == fa["train/000003.jpg"]


def test_generate_with_process_pool_matches_in_process(tmp_path):
    cfg = SyntheticConfig(num_train=140, num_val=4, image_size=(64, 64), seed=1)
    a = generate_synthetic_coco(tmp_path / "a", cfg, workers=0)
    b = generate_synthetic_coco(tmp_path / "b", cfg, workers=2)
    assert _files(a) == _files(b)


def test_the_package_imports_no_torch():
    """The worker processes start with "spawn" and import the generator: without torch they start fast."""
    code = "import sys, data.synthetic.generate; print(sorted(m for m in ('torch', 'models') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_coco_format_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    root = generate_synthetic_coco(tmp_path / "ds", SMALL, workers=0)
    for split, n in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        path = root / "annotations" / f"instances_{split}.json"
        raw = json.loads(path.read_text())
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == n == len(list((root / split).iterdir()))
        assert len(coco.getAnnIds()) == len(raw["annotations"]) > 0
        assert sum(len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()) == len(raw["annotations"])
        cats = coco.loadCats(coco.getCatIds())
        assert [c["id"] for c in cats] == list(range(1, len(SHAPE_CLASSES) + 1))
        assert [c["name"] for c in cats] == list(SHAPE_CLASSES)
        ids = [a["id"] for a in raw["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in raw["annotations"]:
            x, y, bw, bh = a["bbox"]
            assert a["iscrowd"] == 0 and bw > 0 and bh > 0
            assert a["area"] == pytest.approx(bw * bh, abs=0.02)
            assert 0 <= x and x + bw <= 128 + 1e-6 and 0 <= y and y + bh <= 96 + 1e-6
        for im in coco.loadImgs(coco.getImgIds()):
            arr = cv2.imread(str(root / split / im["file_name"]))
            assert arr is not None and arr.shape == (im["height"], im["width"], 3) == (96, 128, 3)


def test_manifest_cache(tmp_path):
    out = tmp_path / "ds"
    root = generate_synthetic_coco(out, SMALL, workers=0)
    assert root == out
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["params"]["format_version"] == generate.FORMAT_VERSION
    watched = [out / "manifest.json", out / "annotations" / "instances_train.json", out / "train" / "000000.jpg"]
    before = [p.stat().st_mtime_ns for p in watched]
    generate_synthetic_coco(out, SMALL, workers=0)
    assert [p.stat().st_mtime_ns for p in watched] == before
    # changed parameters -> regenerated in place
    generate_synthetic_coco(out, _cfg(num_val=3), workers=0)
    man2 = json.loads((out / "manifest.json").read_text())
    assert man2["params"]["num_val"] == 3
    assert len(list((out / "val").iterdir())) == 3
    # an incomplete folder (e.g. missing images) is regenerated
    (out / "val" / "000000.jpg").unlink()
    generate_synthetic_coco(out, _cfg(num_val=3), workers=0)
    assert (out / "val" / "000000.jpg").is_file()
    # no temp folders left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate_synthetic_coco(out, SMALL, workers=0)
    assert (out / "precious.txt").read_text() == "x"


def _sampling_tv(p, n: int, quantile: float = 0.99) -> float:
    """The total variation distance between ``p`` and the histogram of ``n`` draws from it, at this quantile of
    2000 trials: what sampling alone gives a sample of this size (no generator is that exact)."""
    p = np.asarray(p, dtype=np.float64) / np.sum(p)
    counts = np.random.default_rng(0).multinomial(n, p, size=2000)
    return float(np.quantile(0.5 * np.abs(counts / n - p).sum(axis=1), quantile))


def test_generated_split_matches_the_coco_table(tmp_path):
    """The realised statistics (after placement, occlusion checks and drops) of a 120-image split against COCO_STATS.

    Threshold of each histogram: the 99th percentile of the distance that sampling alone gives at the split's size
    (e.g. ~0.15 for the 7 image shapes of 120 images) plus 0.05, twice the generator's own largest deviation
    measured on a 3000-image split (box_aspect 0.025, every other histogram <= 0.018:
    ``python -m tools.coco_stats data/synthetic_cache_coco/annotations/instances_train.json``). A generator that
    ignored the table (the shapes' 1-6 objects in square images) is at 0.5-1 on the image shapes and object counts.
    """
    from tools.coco_stats import distances, load_scenes, measure

    root = generate_synthetic_coco(tmp_path / "coco", SyntheticConfig(num_train=120, num_val=1, seed=3, stats="coco"),
                                   workers=0)
    scenes = load_scenes([root / "annotations" / "instances_train.json"])
    got, table = measure(scenes), COCO_STATS
    counts = np.array([len(s.boxes) for s in scenes])
    group = np.searchsorted(table.size_groups, counts, side="right") - 1
    boxes = {"image_aspect": (table.image_aspect_p, len(scenes)), "objects": (table.objects.p, len(scenes)),
             "box_aspect": (table.box_aspect.p, int(counts.sum()))}
    for g, hist in enumerate(table.sizes):
        label = f"size[{table.size_groups[g]}-{table.size_groups[g + 1] - 1} objects]"
        boxes[label] = (hist.p, int(counts[group == g].sum()))
    for name, tv in distances(got, table).items():
        p, n = boxes[name]
        assert tv <= _sampling_tv(p, n) + 0.05, (name, tv, n)
    ann = json.loads((root / "annotations" / "instances_train.json").read_text())["annotations"]
    fill = np.array([a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in ann])
    name = np.array([SHAPE_CLASSES[a["category_id"] - 1].replace("outlined_", "") for a in ann])
    # the area is the silhouette's (COCO: the mask's), never the box's: an axis-aligned rectangle fills its box, a
    # triangle at most half of it, an ellipse at most pi / 4 (axis-aligned; less when rotated); 2-decimal rounding
    assert (np.abs(fill[name == "rectangle"] - 1) < 2e-3).all()
    assert (fill[name == "triangle"] <= 0.5 + 1e-3).all() and (fill[name == "ellipse"] <= np.pi / 4 + 1e-3).all()
    assert (fill > 0).all()


def test_coco_stats_variant_is_deterministic_and_cached_apart(tmp_path):
    cfg = SyntheticConfig(num_train=4, num_val=2, stats="coco", seed=1)
    a = generate_synthetic_coco(tmp_path / "a", cfg, workers=0)
    b = generate_synthetic_coco(tmp_path / "b", cfg, workers=0)
    c = generate_synthetic_coco(tmp_path / "c", dataclasses.replace(cfg, seed=2), workers=0)
    assert _files(a) == _files(b) and _files(a) != _files(c)
    assert json.loads((a / "manifest.json").read_text())["params"]["stats"] == "coco"
    # the shapes' own ranges are unused: other values of them find the cache up to date
    before = (a / "manifest.json").stat().st_mtime_ns
    unused = dict(image_size=(64, 64), num_objects=(1, 4), min_box=24.0, max_box=160.0)
    generate_synthetic_coco(a, dataclasses.replace(cfg, **unused), workers=0)
    assert (a / "manifest.json").stat().st_mtime_ns == before
    plain = generate_synthetic_coco(tmp_path / "plain", dataclasses.replace(cfg, stats="none"), workers=0)
    assert "stats" not in json.loads((plain / "manifest.json").read_text())["params"]  # the shapes' caches stay valid
    with pytest.raises(ValueError, match="size_range"):  # config.load_config refuses the pair too
        generate_synthetic_coco(tmp_path / "d", dataclasses.replace(cfg, size_range=(100, 200)), workers=0)
