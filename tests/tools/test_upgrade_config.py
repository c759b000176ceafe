"""tools/upgrade_config.py: configs and checkpoints with older keys are rewritten to the current ones, and every
config committed under ablations/runs/ and in the test fixtures is current."""
from __future__ import annotations

import pytest
import torch
import yaml

from config import ConfigError
from config.loader import config_from_dict
from tests.conftest import REPO
from tools import upgrade_config
from tools.upgrade_config import config_files, main, upgrade, upgrade_file
from utils.checkpoint import save_checkpoint

OLD = {  # a run's config.yaml in the flat layout (hand-written: every old kind of key once)
    "model": {"encoder": {"num_blocks": 2, "dilations": [2, 4]},
              "matcher": {"name": "grid_inside", "grid_anchors": "all", "topk": 6, "atss_topk": 7,
                          "max_iou_pos_thresh": 0.6, "max_iou_neg_thresh": 0.3}},
    "data": {"synthetic_num_train": 10, "synthetic_stats": "coco", "hue": 0.2, "mosaic_prob": 0.5,
             "mixup_alpha": 2.0, "num_workers": 0},
    "solver": {"base_lr": 0.01},
}


def test_every_old_key_lands_where_its_value_belongs_now():
    new = upgrade(OLD)
    cfg = config_from_dict(new)
    m, d = cfg.model, cfg.data
    assert m.encoder.dilations == (2, 4) and "num_blocks" not in new["model"]["encoder"]
    assert (m.matcher.name, m.matcher.grid.anchors, m.matcher.uniform.topk, m.matcher.iou_topk.topk) == \
        ("grid_inside", "all", 6, 6)
    assert (m.matcher.atss.topk, m.matcher.max_iou.pos_thresh, m.matcher.max_iou.neg_thresh) == (7, 0.6, 0.3)
    assert (d.synthetic.num_train, d.synthetic.stats, d.yolo.hue, d.mosaic.prob, d.mixup.alpha) == \
        (10, "coco", 0.2, 0.5, 2.0)
    assert (d.num_workers, cfg.solver.base_lr) == (0, 0.01)  # current keys stay as they are
    assert list(new["data"]) == ["num_workers", "synthetic", "yolo", "mosaic", "mixup"]  # the schema's order
    assert upgrade(new) == new and OLD["data"]["hue"] == 0.2  # current configs are left alone; the input too


def test_one_section_per_grid_matcher_merges_when_they_agree():
    sections = {g: {"anchors": "all"} for g in ("grid_center", "grid_neighbors", "grid_inside")}
    assert upgrade({"model": {"matcher": sections}}) == {"model": {"matcher": {"grid": {"anchors": "all"}}}}
    sections["grid_center"] = {"anchors": "best"}
    with pytest.raises(ConfigError, match=r"'model\.matcher\.grid_center\.anchors' \('best'\) and "
                                          r"'model\.matcher\.grid_neighbors\.anchors' \('all'\) both give"):
        upgrade({"model": {"matcher": sections}})


def test_sync_bn_becomes_each_batchnorm_parts_norm():
    assert upgrade({"solver": {"sync_bn": False, "amp": "none"}}) == {"solver": {"amp": "none"}}
    new = upgrade({"model": {"backbone": {"norm": "bn"}, "decoder": {"norm": "gn"}}, "solver": {"sync_bn": True}})
    assert new == {"model": {"backbone": {"norm": "syncbn"}, "encoder": {"norm": "syncbn"},
                             "decoder": {"norm": "gn"}}}  # frozen_bn and gn stay as they are
    assert upgrade({"solver": {"sync_bn": True}})["model"] == {"encoder": {"norm": "syncbn"},
                                                              "decoder": {"norm": "syncbn"}}


def test_a_derived_key_that_disagrees_is_refused():
    with pytest.raises(ConfigError, match=r"'model\.encoder\.num_blocks' needs one dilation per block, got "
                                          r"dilations \[2, 4, 6, 8\]"):
        upgrade({"model": {"encoder": {"num_blocks": 2}}})  # the default dilations: four blocks


def test_files_and_checkpoints_are_rewritten_and_only_when_they_change(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(OLD, sort_keys=False))
    state = {"model": {"w": torch.arange(3.0)}, "config": OLD, "class_names": ["a"]}
    save_checkpoint(run / "last.pth", state)
    (run / "preset.yaml").write_text("# my preset\n" + yaml.safe_dump({"data": {"mixup_prob": 0.5}}))

    assert config_files([run]) == [run / "config.yaml", run / "last.pth"]
    main([str(run), "--dry-run"])
    assert yaml.safe_load((run / "config.yaml").read_text()) == OLD  # --dry-run writes nothing
    assert capsys.readouterr().out.splitlines() == [f"would upgrade {run / 'config.yaml'}",
                                                    f"would upgrade {run / 'last.pth'}"]
    main([str(run)])
    assert capsys.readouterr().out.splitlines() == [f"upgraded {run / 'config.yaml'}", f"upgraded {run / 'last.pth'}"]
    assert yaml.safe_load((run / "config.yaml").read_text()) == upgrade(OLD)
    ckpt = torch.load(run / "last.pth", weights_only=True)
    assert ckpt["config"] == upgrade(OLD) and ckpt["class_names"] == ["a"] and torch.equal(ckpt["model"]["w"],
                                                                                         torch.arange(3.0))
    assert not upgrade_file(run / "config.yaml") and not upgrade_file(run / "last.pth")  # already current
    with pytest.raises(upgrade_config.UserError, match="has comments"):
        upgrade_file(run / "preset.yaml")


def test_a_key_that_no_layout_knows_fails_naming_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"encoder": {"blocks": 3}}}))
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key 'model\.encoder\.blocks'"):
        upgrade_file(path)


def test_committed_configs_are_current():
    files = config_files([REPO / "ablations" / "runs", REPO / "tests" / "fixtures"])
    assert len(files) >= 116  # 115 run configs and the tiny quickstart checkpoint
    for path in files:
        is_yaml = path.suffix == ".yaml"
        data = yaml.safe_load(path.read_text()) if is_yaml else torch.load(path, weights_only=True)["config"]
        assert upgrade(data) == data, path
        config_from_dict(data)
