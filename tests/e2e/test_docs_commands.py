"""Every command of docs/your_own_data.md and docs/error_analysis.md runs as written, in the order written, from a
folder laid out as a fresh clone is (``config/`` of this checkout, nothing else), on the data each names.

The commands are read from the documents' fenced blocks (:func:`doc_commands`): in a block with ``$ `` prompts the
prompted lines, in any other block the lines that start with ``python``, ``\\`` continuations joined, comments
dropped. A document command this test cannot run (another program) fails it, so the documents cannot drift.

The data a command names is made here: ``my_data`` (a YOLO set and a COCO root of the same real images, the seven
of tests/assets, the training split three times over: 21 images, more than the quickstart's batch of 16), the
Label Studio and CVAT exports, the ``faulty`` set of the check_dataset example (its four faults), and the official
R50-C5 COCO checkpoint (``YOLOF_R_50_C5_1x.pth``: seeded official-layout weights, tests/converted_checkpoint.py).
The synthetic shapes are the quickstart's own (``data/synthetic_cache``, written by the quickstart command).

What is shrunk, so that the test takes seconds where the commands take minutes (:func:`shrunk`): every
``train.py`` gets ``--max_iter`` (2 steps; 20 for the fine-tune from the official weights) and ``--no_progress``;
every synthetic set a command generates is 32 + 8 images (``--opts data.synthetic.num_train=32
data.synthetic.num_val=8``, in place of the document's counts); the R50 fine-tune trains and tests at 128-160 px
with 2 images a step; ``train.py`` and ``eval.py`` read without loader processes (``--num_workers 0``: the R50
preset's 8 would each be a fork of this test's process). Everything else runs as written. The commands run in
this process (their ``main``), with the working directory in the folder: the same code path as the scripts,
without a Python start per command. A command that starts the results explorer (``--explore``,
``python -m tools.explore``) serves its page once: the test fetches the page and its data from 127.0.0.1, then
stops the server (:func:`serve_once`), where the command would serve until Ctrl+C.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.converted_checkpoint import write_official_r50
from tests.layouts import IMAGES, coco_gt, yolo_lines

DOCS = ("docs/your_own_data.md", "docs/error_analysis.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


# ------------------------------------------------------------------------------------------ reading the documents
def _logical_lines(text: str) -> list[str]:
    """Lines with their ``\\`` continuations joined."""
    out, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out + ([current] if current else [])


def doc_commands(path: Path) -> list[str]:
    """The commands of a markdown file, in order (see the module docstring)."""
    commands = []
    for _, body in FENCE.findall(path.read_text()):
        lines = _logical_lines(body)
        prompted = [line[2:] for line in lines if line.startswith("$ ")]
        if any(line.startswith("$ ") for line in body.splitlines()):
            commands += prompted
        else:
            commands += [line.strip() for line in lines if line.strip().startswith("python ")]
    return [" ".join(shlex.split(c, comments=True)) for c in commands]


# ------------------------------------------------------------------------------------------ running them
def _main_of(argv: list[str]):
    """(the ``main`` a ``python ...`` command runs, its arguments)."""
    if argv[0] != "python":
        raise AssertionError(f"not a python command: {shlex.join(argv)}")
    if argv[1] == "-m":
        module = importlib.import_module(argv[2])
        if not hasattr(module, "main") and hasattr(module, "__path__"):  # a package: python -m runs its __main__
            module = importlib.import_module(f"{argv[2]}.__main__")
        return module.main, argv[3:]
    script = REPO / argv[1]
    if argv[1].startswith("tools/"):
        return importlib.import_module(f"tools.{script.stem}").main, argv[2:]
    spec = importlib.util.spec_from_file_location(f"doc_{script.stem}", script)  # "test" is the stdlib's
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main, argv[2:]


def _with_opts(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with ``extra`` appended to its ``--opts`` list (argparse keeps only the last ``--opts``)."""
    if "--opts" not in args:
        return args + ["--opts", *extra]
    i = args.index("--opts") + 1
    while i < len(args) and not args[i].startswith("--"):
        i += 1
    return args[:i] + extra + args[i:]


def shrunk(command: str) -> list[str]:
    """The arguments the test runs ``command`` with (what is shrunk: the module docstring)."""
    argv = shlex.split(command)
    if argv[1] in ("train.py", "eval.py"):  # no loader processes: a forked copy of this test process each
        argv = argv + ["--num_workers", "0"]
    synthetic = [a for a in argv if a.startswith(("data.synthetic.num_train=", "data.synthetic.num_val="))]
    argv = [a for a in argv if a not in synthetic]
    if synthetic or (argv[1] == "train.py" and "config/quickstart.yaml" in argv and "data.dataset=" not in command):
        argv = _with_opts(argv, ["data.synthetic.num_train=32", "data.synthetic.num_val=8"])
    if argv[1] == "train.py":
        finetune_r50 = "config/finetune_r50_c5.yaml" in argv
        argv = argv + ["--max_iter", "20" if finetune_r50 else "2", "--no_progress"]
        if finetune_r50:
            argv = _with_opts(argv, ["data.train_min_size=[128]", "data.train_max_size=160",
                                     "data.test_min_size=128", "data.test_max_size=160", "solver.batch_size=2"])
    return argv


def run(command: str) -> object:
    """Run ``command`` (shrunk) in this process; fails the test with the command when it fails."""
    main, args = _main_of(shrunk(command))
    try:
        result = main(args)
    except SystemExit as e:  # argparse
        raise AssertionError(f"{command}: exited with {e.code}") from None
    except Exception as e:
        raise AssertionError(f"{command}: {type(e).__name__}: {e}") from e
    return result


def serve_once(explorer) -> None:
    """What the explorer's command does, for one request each: the page and its data, then the server stops."""
    explorer.start()
    try:
        for path in ("", "api/meta", "api/images?limit=4"):
            with urllib.request.urlopen(explorer.url + path, timeout=30) as response:
                assert response.status == 200, (path, response.status)
    finally:
        explorer.stop()


# ------------------------------------------------------------------------------------------ the data they name
def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def write_my_data(root: Path) -> None:
    """``my_data``: the YOLO layout (data.yaml, images/, labels/) and the COCO layout (annotations/, train/, val/)
    of the tests' seven images; the training split holds each image three times (21 images)."""
    gt = coco_gt()
    cat_ids = sorted(c["id"] for c in gt["categories"])
    class_ids = {cid: k for k, cid in enumerate(cat_ids)}
    for split, copies in (("train", 3), ("val", 1)):
        images, annotations = [], []
        for copy in range(copies):
            for im in gt["images"]:
                name = f"{copy}_{im['file_name']}" if copies > 1 else im["file_name"]
                new_id = len(images) + 1
                anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
                _link(IMAGES / im["file_name"], root / "images" / split / name)
                _link(IMAGES / im["file_name"], root / split / name)
                label = root / "labels" / split / (Path(name).stem + ".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("\n".join(yolo_lines(im, anns, class_ids)) + "\n")
                images.append({**im, "id": new_id, "file_name": name})
                annotations += [{**a, "id": len(annotations) + k + 1, "image_id": new_id} for k, a in enumerate(anns)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": gt["categories"]}))
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": names}, sort_keys=False))


def write_exports(folder: Path) -> None:
    """A Label Studio JSON-min export (project-1-at-2024.json, images in media/upload/1) and a CVAT for images 1.1
    export (annotations.xml, images in images/ beside it), one real image and one box each."""
    _link(IMAGES / "000000223747.jpg", folder / "media" / "upload" / "1" / "000000223747.jpg")
    (folder / "project-1-at-2024.json").write_text(json.dumps([{
        "image": "/data/upload/1/000000223747.jpg", "id": 1,
        "label": [{"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["cat"],
                   "original_width": 500, "original_height": 370}]}]))
    _link(IMAGES / "000000404484.jpg", folder / "images" / "000000404484.jpg")
    (folder / "annotations.xml").write_text(
        '<annotations><version>1.1</version><meta><task><labels><label><name>dog</name></label></labels></task>'
        '</meta><image id="0" name="000000404484.jpg" width="320" height="240">'
        '<box label="dog" xtl="10" ytl="20" xbr="110" ybr="140" occluded="0"/></image></annotations>')


def write_faulty(root: Path) -> None:
    """The check_dataset example's set: the seven images in the YOLO layout (80 COCO names) with the four faults
    the document lists (an image that is no JPEG, a zero-width box, a repeated box, a class id outside the
    names) and one image copied under another name."""
    gt = coco_gt()
    class_ids = {cid: k for k, cid in enumerate(sorted(c["id"] for c in gt["categories"]))}
    for im in gt["images"]:
        _link(IMAGES / im["file_name"], root / "images" / "train" / im["file_name"])
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        label = root / "labels" / "train" / (Path(im["file_name"]).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(yolo_lines(im, anns, class_ids)) + "\n")
    (root / "images" / "train" / "broken.jpg").write_bytes(b"not a JPEG")
    (root / "labels" / "train" / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    shutil.copy(IMAGES / "000000404484.jpg", root / "images" / "train" / "copy_of_404484.jpg")
    (root / "labels" / "train" / "000000223747.txt").write_text(
        "15 0.5 0.5 0.0 0.3\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n85 0.5 0.5 0.2 0.2\n")
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "names": names}))


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A folder as a fresh clone's root is for these commands: config/ (the presets), and the data they name."""
    root = tmp_path_factory.mktemp("clone")
    os.symlink(REPO / "config", root / "config")
    write_my_data(root / "my_data")
    write_exports(root)
    write_faulty(root / "faulty")
    write_official_r50(root / "YOLOF_R_50_C5_1x.pth", seed=3)
    return root


# ------------------------------------------------------------------------------------------ the test
EXPECTED_EXIT = {"faulty/check.json": 1}  # a command the document shows failing: its exit status


def test_the_documents_list_the_commands_this_test_runs():
    commands = [c for doc in DOCS for c in doc_commands(REPO / doc)]
    assert len(commands) >= 20 and all(c.startswith("python ") for c in commands)
    for c in commands:
        _main_of(shlex.split(c))  # every program is one this test knows how to run


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


QUICKSTART = "python train.py --config config/quickstart.yaml --output_dir runs/quickstart"  # the README's model


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_of_the_document_runs_as_written(doc, clone, monkeypatch):
    import tools.explore.__main__ as explore_command
    import tools.explore.launch as explore_launch

    monkeypatch.chdir(clone)
    for module in (explore_launch, explore_command):
        monkeypatch.setattr(module, "explore", serve_once)
    if not (clone / "runs" / "quickstart" / "last.pth").is_file():  # what both documents start from
        run(QUICKSTART)
    finetune_log = _Lines()  # on its own logger: the scripts reset the root logger's handlers
    logging.getLogger("models.finetune").addHandler(finetune_log)
    try:
        for command in doc_commands(REPO / doc):
            finetune_log.lines.clear()
            start = time.perf_counter()
            result = run(command)
            print(f"{time.perf_counter() - start:5.1f} s  {command[:100]}")
            expected = next((code for key, code in EXPECTED_EXIT.items() if key in command), 0)
            if isinstance(result, int) and not isinstance(result, bool):
                assert result == expected, f"{command}: exit status {result}, expected {expected}"
            if "--finetune" in command or "finetune_r50_c5" in command:  # the start is logged, class by class
                lines = finetune_log.lines
                assert len(lines) >= 2 and "loaded" in lines[0] and "classifier rows kept" in lines[1], lines
    finally:
        logging.getLogger("models.finetune").removeHandler(finetune_log)
