"""The house in layers: every project import goes down (or stays in its own package), never up, never in a cycle.

Layers, bottom-up (README.md, "Layout"):

1. ``utils``: no project imports;
2. ``config``;
3. ``models`` and ``data`` (neither imports the other);
4. ``evaluation`` (imports neither models nor data: it scores any detections file);
5. ``engine`` and ``deploy`` (neither imports the other);
6. the applications: the scripts (``train.py``, ``eval.py``, ``test.py``, ``ablate.py``), ``cli.py`` (the glue they
   share: a run's config and device), ``tools/``, ``bench/`` and a package's ``__main__.py`` (``python -m config``).
   Nothing below imports them; a script or tool may use another tool's functions.

Imports sit at the top of files. An import inside a function is allowed only for a heavy or optional third-party
package (:data:`LAZY_OK`), with a comment saying why. The imports are read with ``ast``; a failure names both files.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

RANK = {"utils": 1, "config": 2, "models": 3, "data": 3, "evaluation": 4, "engine": 5, "deploy": 5}
APPS = 6
NEVER = {"evaluation": ("models", "data")}  # below it, but not its business: it scores any detections file
PACKAGES = (*RANK, "tools", "bench")
SCRIPTS = ("train", "eval", "test", "ablate", "cli")
# third-party packages a function may import lazily, each with why
LAZY_OK = (
    "matplotlib",  # slow (about 0.5 s): only the plotting functions need it
    "onnxruntime",  # optional: the onnxruntime backend only
    "onnx",  # optional: ONNX export and its checks only
    "openvino",  # optional: the openvino backend only
    "nncf",  # optional and slow: int8 calibration only
    "torch.utils.tensorboard",  # slow, and pulls tensorboard: only when a run logs to it
    "tensorboard",  # the same
    "torch.onnx",  # slow: export only
    "faster_coco_eval",  # optional: the faster COCO evaluator, pycocotools otherwise
    "torch.utils.flop_counter",  # heavy: the complexity benchmark only
)


def _source_files() -> list[Path]:
    files = [REPO / f"{s}.py" for s in SCRIPTS]
    for pkg in PACKAGES:
        files += sorted((REPO / pkg).rglob("*.py"))
    return [f for f in files if f.is_file()]


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[0]
    if module.endswith(".__main__"):  # a package's command line (python -m config) is an application
        return module, APPS
    return top, RANK.get(top, APPS)


def _imports(path: Path):
    """(imported module, line, at top level, the source line) for every import of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    lines = path.read_text().splitlines()
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at the top level count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in top_level, lines[node.lineno - 1]


def _project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES or name in SCRIPTS


def test_imports_only_go_down():
    problems = []
    for path in _source_files():
        me = _module(path)
        my_top, my_rank = _layer(me)
        for name, line, _, _ in _imports(path):
            if not _project(name):
                continue
            top, rank = _layer(name)
            if top == my_top:
                continue
            if rank > my_rank or (rank == my_rank and my_rank != APPS):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name} "
                                f"({top}, layer {rank}) from layer {my_rank} ({my_top})")
            if top in NEVER.get(my_top, ()):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name}: {my_top} never imports {top}")
            if my_rank < APPS and (name.split(".")[0] in ("tools", "bench") or name in SCRIPTS):
                problems.append(f"{path.relative_to(REPO)}:{line} (the library) imports the application {name}")
    assert not problems, "upward or sideways imports:\n" + "\n".join(problems)


def test_imports_sit_at_the_top_of_files():
    problems = []
    for path in _source_files():
        for name, line, top, text in _imports(path):
            if top:
                continue
            if _project(name) or not name.startswith(LAZY_OK):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name} inside a function")
            elif "#" not in text:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name} lazily without a comment saying why")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    modules = {_module(p): p for p in _source_files()}
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for name, _, _, _ in _imports(path):
            parts = name.split(".")
            for k in range(len(parts), 0, -1):  # `from a.b import c`: the module a.b (or a.b.c when it is one)
                if ".".join(parts[:k]) in modules:
                    target = ".".join(parts[:k])
                    if target != m:
                        graph[m].add(target)
                    break
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(str(modules[c].relative_to(REPO)) for c in cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_copied_sys_path_edits():
    """At most one bootstrap puts the repository on ``sys.path`` (tools/_bootstrap.py); nothing else edits it."""
    edits = [p.relative_to(REPO) for p in _source_files() if "sys.path.insert" in p.read_text()
             or "sys.path.append" in p.read_text()]
    assert [str(p) for p in edits] in ([], ["tools/_bootstrap.py"]), edits
