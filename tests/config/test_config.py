"""The config package: the schema is the one place of defaults, presets state only differences, values are checked
when they load, and the generated listing (config/README.md) is up to date (the family names: test_families.py)."""
from __future__ import annotations

import json

import pytest
import yaml

from config import ConfigError, config_to_dict, load_config
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


def test_every_schema_key_has_a_comment():
    comments = field_comments()
    assert set(comments) == set(_flat(config_to_dict(Config())))
    assert all(comments.values()), [k for k, v in comments.items() if not v]


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


def test_a_float_key_takes_a_fraction_and_the_official_warm_up_starts_at_lr_over_its_length():
    assert load_config(None, ["solver.warmup_factor=1/3000"]).solver.warmup_factor == 1 / 3000
    assert load_config(None, {"solver.base_lr": "3 / 100"}).solver.base_lr == 0.03
    for bad in ("1/0", "a/b", "1/2/3", "fast"):
        with pytest.raises(ConfigError, match=r"^config key 'solver\.warmup_factor': expected a number or a fraction "):
            load_config(None, [f"solver.warmup_factor={bad}"])
    for name in ("yolof_r50_c5_1x", "yolof_r101_dc5_1x", "yolof_x101_64x4d_c5_1x"):  # 1500 and 3000 steps
        s = load_config(REPO / "config" / f"{name}.yaml").solver
        assert s.warmup_factor == 1 / s.warmup_iters, name


def test_cached_images_and_loader_workers_cannot_meet():
    """Loader workers restart every epoch, so the images they would keep are lost: the config refuses the pair."""
    quickstart = REPO / "config" / "quickstart.yaml"
    assert load_config(quickstart).data.cache_images and load_config(quickstart).data.num_workers == 0
    with pytest.raises(ConfigError) as e:
        load_config(quickstart, ["data.num_workers=2"])
    assert str(e.value) == ("config key 'data.cache_images': needs data.num_workers=0, got data.num_workers=2 "
                            "(set data.cache_images=false to load with workers)")
    assert load_config(quickstart, ["data.num_workers=2", "data.cache_images=false"]).data.num_workers == 2


def test_the_committed_listing_is_up_to_date():
    assert LISTING.read_text() == listing(), "config/README.md is stale: run python -m config --write-listing"


def test_the_command_prints_a_preset_and_its_changes(capsys):
    config_main([str(REPO / "config/yolof_r50_dc5_1x.yaml")])
    text = capsys.readouterr().out
    assert "  backbone:\n    name: resnet50  # the backbone network" in text
    assert "    dilated_c5: true  # DC5: the last stage dilated" in text
    config_main([str(REPO / "config/small_cpu.yaml"), "--changed", "--opts", "solver.base_lr=0.002"])
    lines = capsys.readouterr().out.splitlines()
    assert "data.num_workers: 0  # default 8" in lines and "solver.base_lr: 0.002  # default 0.12" in lines
    assert len(lines) == 39
