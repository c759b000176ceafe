"""The config package: the schema is the one place of defaults, presets state only differences, validation reads
each family's own list of names, and the generated listing (config/README.md) is up to date."""
from __future__ import annotations

import importlib
import json
import re

import pytest
import yaml

import models.backbone
import models.matcher
from cli import families as _families
from cli import load_checked_config as load_config
from config import ConfigError, config_to_dict
from config.__main__ import main as config_main
from config.listing import LISTING, changed_keys, field_comments, format_config, listing, presets
from config.loader import apply_overrides, config_from_dict
from config.schema import Config
from tests.conftest import REPO

PRESETS = presets()


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _as_json(cfg: Config) -> str:
    return json.dumps(config_to_dict(cfg), sort_keys=True)  # tells 32 from 32.0, unlike ==


def test_the_presets_are_the_paper_settings_and_no_file_repeats_the_defaults():
    names = {p.name for p in PRESETS}
    assert "yolof_r50_c5_1x.yaml" in names and "quickstart.yaml" in names and len(names) == 12
    assert not (REPO / "config" / "base.yaml").exists()


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_each_preset_states_only_what_differs_from_its_base(path):
    raw = yaml.safe_load(path.read_text()) or {}
    base = raw.pop("_base_", None)
    base_cfg = load_config(path.parent / base) if base else Config()
    own = _flat(raw)
    assert own, f"{path.name} states nothing"
    same = [k for k in own if k not in changed_keys(load_config(path), base_cfg)]
    assert not same, f"{path.name} repeats what {base or 'the schema'} already says: {same}"


def test_derived_presets_inherit_from_their_base():
    """R50-DC5 is the R50-C5 recipe with the DC5 changes; R101-DC5 is R50-DC5 on ResNet-101 at batch 32."""
    c5, dc5 = (load_config(REPO / f"config/yolof_r50_{s}_1x.yaml") for s in ("c5", "dc5"))
    assert set(changed_keys(dc5, c5)) == {"model.backbone.dilated_c5", "model.encoder.dilations",
                                          "model.anchors.sizes", "model.matcher.uniform.topk",
                                          "model.matcher.pos_ignore_thresh"}
    r101_dc5 = load_config(REPO / "config/yolof_r101_dc5_1x.yaml")
    assert r101_dc5.model.backbone.name == "resnet101" and r101_dc5.model.encoder.dilations == (4, 8, 12, 16)
    assert r101_dc5.solver.batch_size == 32 and r101_dc5.data.num_workers == 8


def test_schema_defaults_have_their_declared_types():
    """Defaults pass through validation unchanged, floats staying floats (anchor sizes 32.0, not 32)."""
    cfg = Config()
    assert _as_json(config_from_dict(config_to_dict(cfg))) == _as_json(cfg)
    assert all(isinstance(s, float) for s in cfg.model.anchors.sizes)


def test_official_defaults_that_presets_used_to_take_from_a_base_file():
    d = Config()
    assert d.data.num_workers == 8  # official DATALOADER.NUM_WORKERS of yolof.res50.C5.1x
    assert load_config(REPO / "config/yolof_x101_64x4d_c5_1x.yaml").data.num_workers == 4  # its own official value
    assert load_config(REPO / "config/small_cpu.yaml").data.num_workers == 0


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_the_printed_config_loads_back_to_the_same_config(path, tmp_path):
    cfg = load_config(path)
    out = tmp_path / "resolved.yaml"
    out.write_text(format_config(cfg))
    assert _as_json(load_config(out)) == _as_json(cfg)


def test_every_schema_key_has_a_comment_and_listed_names_say_where_their_list_lives():
    comments = field_comments()
    assert set(comments) == set(_flat(config_to_dict(Config())))
    assert all(comments.values()), [k for k, v in comments.items() if not v]
    for key, family in _families().items():
        named = re.match(r"one of ((?:\w+\.)+)([A-Z_]+)", comments[key])
        if named is None:  # a switch of one module, without a list of its own: the comment explains each value
            assert all(v in comments[key] for v in family), key
            continue
        module, name = named.group(1).rstrip("."), named.group(2)
        assert getattr(importlib.import_module(module), name) is family, key


def test_a_bad_choice_names_the_key_and_the_familys_names():
    with pytest.raises(ConfigError) as e:
        load_config(None, {"model.matcher.name": "hungarian"})
    assert str(e.value) == f"config key 'model.matcher.name': 'hungarian' is not one of {sorted(models.matcher.MATCHERS)}"
    with pytest.raises(ConfigError, match=r"^config key 'data\.pipeline': 'mosaic' is not one of \["):
        load_config(None, ["data.pipeline=mosaic"])


def test_validation_reads_the_familys_list(monkeypatch):
    """A name added to a family's own list is a valid config value, with no other file touched."""
    for key, value in [("model.matcher.name", "hungarian"), ("model.backbone.name", "resnet152")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, {key: value})
    for module, attr, name in [(models.matcher, "MATCHERS", "hungarian"), (models.backbone, "BACKBONES", "resnet152")]:
        family = getattr(module, attr)  # a tuple of names or a dict name -> builder
        if isinstance(family, dict):
            monkeypatch.setitem(family, name, None)
        else:
            monkeypatch.setattr(module, attr, (*family, name))
    cfg = load_config(None, {"model.matcher.name": "hungarian", "model.backbone.name": "resnet152"})
    assert (cfg.model.matcher.name, cfg.model.backbone.name) == ("hungarian", "resnet152")


def test_overrides_apply_to_a_stored_config_dict_as_to_a_preset():
    """A checkpoint's stored config + --opts (test.py, deploy) gives what the preset + the same opts gives."""
    opts = ["solver.base_lr=0.005", "model.matcher.name=grid_neighbors", "data.train_min_size=[600, 800]"]
    stored = config_to_dict(load_config(REPO / "config" / "small_cpu.yaml"))
    cfg = config_from_dict(apply_overrides(stored, opts))
    assert cfg == load_config(REPO / "config" / "small_cpu.yaml", opts)
    assert (cfg.solver.base_lr, cfg.data.train_min_size) == (0.005, (600, 800))
    assert apply_overrides({"a": 1}, None) == {"a": 1} == apply_overrides({"a": 1}, [])
    with pytest.raises(ConfigError, match=r"^override 'solver\.base_lr\.x': 'base_lr' is not a section$"):
        apply_overrides(stored, {"solver.base_lr.x": 1})


@pytest.mark.parametrize("override, message", [
    ("model.decoder.pred_kernel=5", "config key 'model.decoder.pred_kernel': must be 1 or 3, got 5"),
    ("solver.steps=[20000, 15000]", "config key 'solver.steps': must be increasing, got (20000, 15000)"),
    ("data.test_batch_size=0", "config key 'data.test_batch_size': must be >= 1, got 0"),
    ("train.ema_decay=1.0", "config key 'train.ema_decay': must be in [0, 1), got 1.0"),
    ("model.anchors.custom_wh=[[10, 0]]", "config key 'model.anchors.custom_wh': widths and heights must be > 0, "
                                          "got ((10.0, 0.0),)"),
])
def test_range_checks_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == message


def test_the_committed_listing_is_up_to_date():
    assert LISTING.read_text() == listing(), "config/README.md is stale: run python -m config --write-listing"


def test_the_command_prints_a_preset_and_its_changes(capsys):
    config_main([str(REPO / "config/yolof_r50_dc5_1x.yaml")])
    text = capsys.readouterr().out
    assert "  backbone:\n    name: resnet50  # one of models.backbone.BACKBONES" in text
    assert "    dilated_c5: true  # DC5: last stage dilated" in text
    config_main([str(REPO / "config/small_cpu.yaml"), "--changed", "--opts", "solver.base_lr=0.002"])
    lines = capsys.readouterr().out.splitlines()
    assert "data.num_workers: 0  # default 8" in lines and "solver.base_lr: 0.002  # default 0.12" in lines
    assert len(lines) == 39
