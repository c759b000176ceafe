"""cli.run_config: a script's config from --config, a checkpoint or the quickstart, through the one function the
Predictor and the tools use too (config.loader.config_from_checkpoint)."""
from __future__ import annotations

import argparse

import pytest

from cli import DEFAULT_CONFIG, run_config
from config import Config, ConfigError, config_to_dict, load_config
from config.loader import config_from_checkpoint
from deploy.predictor import Predictor
from models import build_model
from tests.conftest import REPO
from utils.checkpoint import save_checkpoint

SMALL = REPO / "config" / "small_cpu.yaml"


def _args(config=None, opts=(), **flags) -> argparse.Namespace:
    return argparse.Namespace(config=config, opts=list(opts), **flags)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint of a 3-class run whose stored config says num_classes 3."""
    cfg = load_config(SMALL, {"model.num_classes": 3, "model.backbone.width_mult": 0.125, "solver.base_lr": 0.005})
    path = tmp_path_factory.mktemp("run") / "last.pth"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg),
                           "class_names": ["a", "b", "c"]})
    return path, cfg


def test_without_a_weight_the_config_or_the_quickstart_is_loaded():
    assert run_config(_args()) == load_config(DEFAULT_CONFIG)
    assert run_config(_args(str(SMALL), ["solver.base_lr=0.01"])) == load_config(SMALL, ["solver.base_lr=0.01"])


def test_a_weight_gives_its_stored_config_with_the_opts(checkpoint):
    path, stored = checkpoint
    cfg = run_config(_args(opts=["solver.base_lr=0.01"]), str(path))
    assert cfg == load_config(SMALL, {"model.num_classes": 3, "model.backbone.width_mult": 0.125,
                                      "solver.base_lr": 0.01})
    assert run_config(_args(), str(path)) == stored


def test_a_config_beside_a_weight_wins_and_auto_takes_the_checkpoints_class_count(checkpoint):
    path, _ = checkpoint
    cfg = run_config(_args(str(SMALL), ["model.num_classes=auto"]), str(path))
    assert cfg.model.num_classes == 3 and cfg.solver.base_lr == load_config(SMALL).solver.base_lr


def test_script_flags_override_their_keys():
    cfg = run_config(_args(str(SMALL), dataset="coco", root="/data/coco", num_workers=3))
    assert (cfg.data.dataset, cfg.data.root, cfg.data.num_workers) == ("coco", "/data/coco", 3)
    assert run_config(_args(str(SMALL), num_workers=0, root=None)).data.num_workers == 0
    # the quickstart keeps its images in memory: the flag's workers win over the cache, an explicit cache does not
    assert load_config(DEFAULT_CONFIG).data.cache_images
    cfg = run_config(_args(num_workers=2))
    assert (cfg.data.num_workers, cfg.data.cache_images) == (2, False)
    with pytest.raises(ConfigError, match=r"^config key 'data\.cache_images': needs data\.num_workers=0"):
        run_config(_args(num_workers=2, opts=["data.cache_images=true"]))


def test_the_predictor_rebuilds_the_same_config_as_the_scripts(checkpoint):
    path, _ = checkpoint
    opts = ["model.test.score_thresh=0.2"]
    assert Predictor(path, opts=opts).cfg == run_config(_args(opts=opts), str(path))
    opts = ["model.num_classes=auto", "model.backbone.width_mult=0.125"]  # the stored weights' model
    assert Predictor(path, config=SMALL, opts=opts).cfg == run_config(_args(str(SMALL), opts), str(path))
    assert Predictor(path, config=SMALL, opts=opts).cfg.model.num_classes == 3


def test_a_checkpoint_without_a_config_needs_one():
    with pytest.raises(ConfigError, match=r"^w\.pth holds no config: pass one \(--config\)$"):
        config_from_checkpoint({"model": {}}, source="w.pth")
    assert config_from_checkpoint({"model": {}}, config=SMALL) == load_config(SMALL)
    assert config_from_checkpoint({}, config=Config()) == Config()
    with pytest.raises(ConfigError, match="not to a Config object"):
        config_from_checkpoint({}, ["solver.base_lr=1"], config=Config())
