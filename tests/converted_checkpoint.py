"""A converted checkpoint for deployment tests: seeded official-layout R50-C5 weights through utils/convert_official.

The weights come from tests/fixtures/golden/make_weights_generic.py (non-degenerate: scores spread below 1, so
detections are not ties) and are converted with this project's converter, as a user converts the official
zoo. The stored config is the R50-C5 preset with the given overrides (small test sizes keep tests fast).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.conftest import REPO, golden_path

FAST = {"data.test_min_size": 256, "data.test_max_size": 416, "model.test.score_thresh": 0.05}


def write_converted_r50(path: Path, overrides: dict | None = None, seed: int = 7) -> Path:
    from config import config_to_dict, load_config
    from models import build_model
    from utils.checkpoint import save_checkpoint
    from tools.convert_official import convert_state_dict

    script, zoo = golden_path("make_weights_generic.py"), golden_path("official_zoo.json")
    spec = importlib.util.spec_from_file_location("make_weights_generic", script)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    entry = json.loads(zoo.read_text())["models"]["yolof.res50.C5.1x"]
    ours, _ = convert_state_dict(gen.make(entry["state_dict"], entry["config"], seed))
    cfg = load_config(REPO / "config/yolof_r50_c5_1x.yaml", {**FAST, **(overrides or {})})
    model = build_model(cfg)
    model.load_state_dict(ours, strict=True)
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return path


def images_of_different_shapes(coco_tiny: Path, n: int = 3) -> list[Path]:
    """``n`` coco_tiny images spread over the range of aspect ratios (so their resized sizes differ)."""
    import cv2

    paths = sorted((coco_tiny / "val2017").glob("*.jpg"))
    ratio = {p: (lambda s: s[1] / s[0])(cv2.imread(str(p)).shape) for p in paths}
    by_ratio = sorted(paths, key=lambda p: ratio[p])
    picked = [by_ratio[round(i * (len(by_ratio) - 1) / (n - 1))] for i in range(n)]
    assert len({round(ratio[p], 2) for p in picked}) == n, "coco_tiny needs images of different shapes"
    return picked


def write_official_r50(path: Path, seed: int = 7) -> Path:
    """Seeded weights of the official R50-C5 COCO model under the official key names (``{"model": ...}``, as the
    official zoo's files hold them): the input of tools/convert_official.py."""
    import torch

    script, zoo = golden_path("make_weights_generic.py"), golden_path("official_zoo.json")
    spec = importlib.util.spec_from_file_location("make_weights_generic", script)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    entry = json.loads(zoo.read_text())["models"]["yolof.res50.C5.1x"]
    torch.save({"model": gen.make(entry["state_dict"], entry["config"], seed)}, path)
    return path
