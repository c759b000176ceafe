"""Bad user input ends a script with one line naming the problem and exit status 2; a bug keeps its traceback."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from utils.script import run_script
from utils.errors import UserError


def _one_line(capsys, main, *argv) -> str:
    """Run ``main(argv)`` as the scripts' entry does; return its one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_script(lambda: main(list(argv)))
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


def _script(name):
    return importlib.import_module(name).main


def test_the_entry_turns_user_errors_into_one_line_and_keeps_tracebacks_of_bugs(capsys):
    def bad_input():
        raise UserError("data/x.json: image id 7 is not in the ground truth")

    assert _one_line(capsys, lambda argv: bad_input()) == "error: data/x.json: image id 7 is not in the ground truth"
    with pytest.raises(ZeroDivisionError):  # not a user error: propagates, so Python prints its traceback
        run_script(lambda: 1 / 0)


def test_config_mistakes(capsys, tmp_path):
    train = _script("train")
    out = ["--output_dir", str(tmp_path / "run")]
    assert _one_line(capsys, train, *out, "--opts", "model.matcher.uniform.topk=abc") == \
        "error: config key 'model.matcher.uniform.topk': expected an integer, got 'abc'"
    line = _one_line(capsys, train, *out, "--opts", "model.matcher.topkk=4")
    assert line.startswith("error: unknown config key 'model.matcher.topkk'; valid keys here: ")
    assert _one_line(capsys, train, *out, "--opts", "model.num_classes=many") == \
        "error: config key 'model.num_classes': must be >= 1 or 'auto', got 'many'"
    line = _one_line(capsys, train, *out, "--config", str(tmp_path / "nope.yaml"))
    assert line == f"error: config file not found: {tmp_path / 'nope.yaml'}"


def _coco_root(tmp_path, split="train"):
    """ROOT/annotations/instances_<split>.json: 2 images, categories 1 and 3, no image folder."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    gt = {"images": [{"id": 10, "file_name": "a.jpg", "height": 64, "width": 64},
                     {"id": 11, "file_name": "b.jpg", "height": 64, "width": 64}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 11, "category_id": 3, "bbox": [8, 8, 30, 20], "area": 600,
                           "iscrowd": 0}]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt))
    return root


def test_missing_dataset_and_image_folders(capsys, tmp_path):
    train = _script("train")
    base = ["--output_dir", str(tmp_path / "run"), "--opts", "data.dataset=coco", "model.num_classes=2"]
    missing = tmp_path / "no_such_folder"
    assert _one_line(capsys, train, *base, f"data.root={missing}") == \
        f"error: COCO annotation file not found: {missing / 'annotations' / 'instances_train.json'}"
    root = _coco_root(tmp_path)
    assert _one_line(capsys, train, *base, f"data.root={root}") == \
        f"error: image folder not found: {root / 'train'} (it holds the images of " \
        f"{root / 'annotations' / 'instances_train.json'})"
    (root / "train").mkdir()
    assert _one_line(capsys, train, *base[:-1], "model.num_classes=5", f"data.root={root}").endswith(
        "has 2 classes but model.num_classes is 5; set model.num_classes=2 (or auto)")


@pytest.mark.parametrize("change, message", [
    ({"image_id": 99}, "1 image id(s) are not in the ground truth: 99"),
    ({"category_id": 2}, "1 category id(s) are not in the ground truth (COCO ids are non-contiguous, e.g. 1..90): 2"),
    ({"score": float("nan")}, "1 detection(s) have NaN/inf in bbox or score (first: #1 bbox=[8, 8, 30, 20] score=nan)"),
])
def test_eval_results_with_a_bad_detection(capsys, tmp_path, change, message):
    root = _coco_root(tmp_path, "val2017")
    dets = [{"image_id": 10, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9},
            {"image_id": 11, "category_id": 3, "bbox": [8, 8, 30, 20], "score": 0.8, **change}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))  # json writes NaN as NaN, which Python's json reads back
    line = _one_line(capsys, _script("eval"), "-d", "coco", "--root", str(root), "--results", str(path),
                     "--out", str(tmp_path / "m.json"))
    assert line == f"error: {path}: {message}"


def test_eval_results_file_and_plot_runs_folder_that_do_not_exist(capsys, tmp_path):
    root = _coco_root(tmp_path, "val2017")
    assert _one_line(capsys, _script("eval"), "-d", "coco", "--root", str(root), "--results",
                     str(tmp_path / "none.json")) == \
        f"error: --results {tmp_path / 'none.json'}: no such file or folder"
    from tools.plot_runs import main as plot_main

    assert _one_line(capsys, plot_main, str(tmp_path), "--out", str(tmp_path / "c.png")) == \
        f"error: {tmp_path}: no metrics.jsonl (not a train.py output folder?)"


def test_scripts_run_as_programs_print_only_the_line(tmp_path):
    """The real entries: nothing but the message on stderr, exit status 2."""
    root = _coco_root(tmp_path, "val2017")
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    for args, message in [
        (["train.py", "--output_dir", str(tmp_path / "r"), "--opts", "model.matcher.uniform.topk=abc"],
         "error: config key 'model.matcher.uniform.topk': expected an integer, got 'abc'"),
        (["eval.py", "-d", "coco", "--root", str(root), "--results", str(path), "--out", str(tmp_path / "m.json")],
         f"error: {path}: 1 image id(s) are not in the ground truth: 99"),
        (["tools/plot_runs.py", str(tmp_path / "r2")], f"error: {tmp_path / 'r2'}: no metrics.jsonl (not a train.py "
                                                       "output folder?)"),
    ]:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip() == message, (args, proc.stderr)


class _UnreadableInWorker:
    """A dataset whose images cannot be read: the error is raised in a DataLoader worker process."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from data.dataset_base import UnreadableImagesError

        raise UnreadableImagesError("COCODetection: 11 images could not be read, more than the allowed 10")


def test_a_user_error_raised_in_a_dataloader_worker_is_one_line(capsys):
    from torch.utils.data import DataLoader

    def main(argv):
        next(iter(DataLoader(_UnreadableInWorker(), num_workers=1)))  # torch re-raises it with the worker traceback

    assert _one_line(capsys, main) == "error: COCODetection: 11 images could not be read, more than the allowed 10"
