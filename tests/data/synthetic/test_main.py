"""python -m data.synthetic: the folder of a config's data.synthetic, the same one training reads."""
from __future__ import annotations

import json

import pytest

from config import load_config
from data.synthetic.__main__ import main
from data.synthetic.generate import _params
from tests.conftest import REPO
from utils.errors import UserError


def test_the_command_writes_the_configs_folder(tmp_path, capsys):
    out = tmp_path / "cli"
    opts = ["data.synthetic.num_train=3", "data.synthetic.num_val=2", "data.synthetic.image_size=[64, 80]",
            "data.synthetic.seed=5"]
    main(["--config", str(REPO / "config" / "small_cpu.yaml"), "--opts", *opts, "--out", str(out), "--workers", "0"])
    assert str(out.resolve()) in capsys.readouterr().out
    params = json.loads((out / "manifest.json").read_text())["params"]
    assert params == _params(load_config(REPO / "config" / "small_cpu.yaml", opts).data.synthetic)
    assert params["image_size"] == [64, 80] and params["seed"] == 5 and params["num_train"] == 3


def test_a_config_of_another_dataset_needs_out():
    with pytest.raises(UserError, match=r"data\.dataset is coco.*pass --out"):
        main(["--config", str(REPO / "config" / "yolof_r50_c5_1x.yaml")])
