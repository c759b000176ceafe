"""Each family's names are declared once, in config/schema.py (a ``Literal`` per key), and checked whenever a config
loads; each family's registry, where the family lives, holds exactly those names."""
from __future__ import annotations

import pytest
import yaml

from config import ConfigError, config_to_dict, load_config
from config.listing import family_names
from config.loader import config_from_checkpoint
from config.schema import Config
from data.build import DATASETS
from data.pipelines import PIPELINES
from data.synthetic.scenes import SCENE_STATS
from deploy.predictor import Predictor
from engine.optim import LR_DECAYS, OPTIMIZERS, SCHEDULES
from models.backbone import BACKBONE_NORMS, BACKBONES
from models.detector import INPUT_FORMATS
from models.layers import ACTIVATIONS, NORMS
from models.matcher import MATCHERS
from utils.checkpoint import save_checkpoint
from utils.precision import AMP_MODES

# schema key -> the registry that builds (or dispatches on) each of its names
REGISTRIES = {
    "model.backbone.name": BACKBONES,
    "model.backbone.norm": BACKBONE_NORMS,
    "model.input_format": INPUT_FORMATS,
    "model.encoder.norm": NORMS,
    "model.encoder.activation": ACTIVATIONS,
    "model.decoder.norm": NORMS,
    "model.decoder.activation": ACTIVATIONS,
    "model.matcher.name": MATCHERS,
    "data.dataset": DATASETS,
    "data.pipeline": PIPELINES,
    "data.synthetic.stats": SCENE_STATS,
    "solver.optimizer": OPTIMIZERS,
    "solver.lr_decay": LR_DECAYS,
    "solver.schedule": SCHEDULES,
    "solver.amp": AMP_MODES,
}
# two-way switches one module branches on, without a registry: tests/models/test_build.py builds each value from
# the config and checks the module that results
SWITCHES = {"model.backbone.style", "model.box_coder.decode_method", "model.matcher.grid.anchors",
            "model.loss.normalization"}


def test_every_family_key_has_a_registry_or_is_a_switch():
    assert set(family_names()) == set(REGISTRIES) | SWITCHES


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_the_registry_holds_the_declared_names(key):
    """A name added in one place and not the other fails here."""
    declared = family_names()[key]
    assert len(set(declared)) == len(declared)
    assert sorted(REGISTRIES[key]) == sorted(declared), key


@pytest.mark.parametrize("key", sorted(family_names()))
def test_a_name_outside_the_family_fails_at_load_naming_the_key_and_the_names(key):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: "hungarian"})
    assert str(e.value) == f"config key '{key}': 'hungarian' is not one of {list(family_names()[key])}"


def test_every_way_to_load_a_config_checks_the_names(tmp_path):
    """A YAML file, --opts, a checkpoint's stored config and the Predictor all validate on load."""
    bad = config_to_dict(Config())
    bad["model"]["matcher"]["name"] = "hungarian"
    message = r"^config key 'model\.matcher\.name': 'hungarian' is not one of \['uniform', "
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model.matcher.name=hungarian"])
    with pytest.raises(ConfigError, match=message):
        config_from_checkpoint({"config": bad})
    save_checkpoint(tmp_path / "bad.pth", {"model": {}, "config": bad})
    with pytest.raises(ConfigError, match=message):
        Predictor(tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=message):
        Predictor(tmp_path / "bad.pth", config=tmp_path / "bad.yaml")


def test_the_imagenet_start_is_checked_wherever_the_config_loads():
    """model.backbone.weights must fit the model, from a preset as from a checkpoint's stored config."""
    stored = config_to_dict(load_config(None, ["model.backbone.weights=weights/R-50.pkl"]))
    stored["model"]["input_format"] = "RGB"  # the MSRA file was trained on BGR
    with pytest.raises(ConfigError, match=r"^config keys 'model\.backbone\.weights' and 'model\.input_format': "
                                          r"R-50\.pkl was trained on BGR input"):
        config_from_checkpoint({"config": stored})
