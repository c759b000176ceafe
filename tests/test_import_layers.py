"""The house in layers: every project import goes down (or stays in its own package), never up, never in a cycle.

Layers, bottom-up (README.md, "Layout"):

1. ``utils``: no project imports;
2. ``config``;
3. ``models`` and ``data`` (neither imports the other);
4. ``evaluation`` (imports neither models nor data: it scores any detections file);
5. ``engine`` and ``deploy`` (neither imports the other);
6. the applications: the scripts (``train.py``, ``eval.py``, ``test.py``, ``ablate.py``), ``cli.py`` (the glue they
   share: a run's config and device), ``tools/``, ``bench/``, ``studies/`` (ablation studies: it imports
   cli.py) and a package's ``__main__.py`` (``python -m config``).
   Nothing below imports them; a script or tool may use another tool's functions.

Imports sit at the top of files: directly in the module, or directly in a top-level ``if TYPE_CHECKING:`` or
``try:`` (and the tools' ``if __package__ ...: import _bootstrap``). Any other import (in a function, in an ``if``,
nested deeper) is allowed only for a heavy or optional third-party package (:data:`LAZY_OK`), with a comment after
it saying why (``# noqa`` alone is no reason). The imports are read with ``ast``; a failure names both files.
"""
from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
from pathlib import Path

import pytest

from tests.conftest import REPO

RANK = {"utils": 1, "config": 2, "models": 3, "data": 3, "evaluation": 4, "engine": 5, "deploy": 5}
APPS = 6
NEVER = {"evaluation": ("models", "data")}  # below it, but not its business: it scores any detections file
PACKAGES = (*RANK, "tools", "bench", "studies")
APP_PACKAGES = ("tools", "bench", "studies")
SCRIPTS = ("train", "eval", "test", "ablate", "cli")
BOOTSTRAP = "_bootstrap"  # tools/_bootstrap.py: what `python tools/<name>.py` imports first
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


def _counts_as_top_level(node: ast.stmt) -> list[ast.stmt]:
    """The statements of a top-level ``node`` that count as top level: the node itself; the body of
    ``if TYPE_CHECKING:``; the body and the handlers of a ``try:`` (an import and its fallback); the body of a tool's
    ``if __package__ ...:`` that imports ``_bootstrap`` alone (tools/_bootstrap.py). Nothing nested deeper."""
    if isinstance(node, ast.If):
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" and not node.orelse:
            return node.body
        bootstrap = [n for n in node.body if isinstance(n, ast.Import) and [a.name for a in n.names] == [BOOTSTRAP]]
        if "__package__" in ast.unparse(node.test) and bootstrap == node.body and not node.orelse:
            return node.body
        return []
    if isinstance(node, ast.Try):
        return node.body + [n for h in node.handlers for n in h.body]
    return [node]


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment on that line (a ``#`` inside a string is not one)."""
    return {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


def reason(comment: str) -> str:
    """What a comment says once linter directives (``noqa``, ``type: ignore``) are taken out."""
    text = re.sub(r"noqa(:\s*[A-Z]+\d+(\s*,\s*[A-Z]+\d+)*)?|type:\s*ignore(\[[^]]*\])?", "", comment.lstrip("#"))
    return text.strip(" \t:;,-()")


def _imports(path: Path):
    """(imported module, line, at top level, the reason its comment gives) for every import of ``path``."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    comments = _comments(source)
    top_level = {id(n) for node in tree.body for n in _counts_as_top_level(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        why = " ".join(reason(comments[i]) for i in range(node.lineno, node.end_lineno + 1) if i in comments).strip()
        for name in names:
            yield name, node.lineno, id(node) in top_level, why


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
            if my_rank < APPS and (name.split(".")[0] in APP_PACKAGES or name in SCRIPTS):
                problems.append(f"{path.relative_to(REPO)}:{line} (the library) imports the application {name}")
    assert not problems, "upward or sideways imports:\n" + "\n".join(problems)


def test_imports_sit_at_the_top_of_files():
    problems = []
    for path in _source_files():
        for name, line, top, why in _imports(path):
            if top:
                continue
            if _project(name) or not name.startswith(LAZY_OK):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name} below the top level (in a function "
                                "or a block)")
            elif not re.search(r"[A-Za-z]{2}", why):
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


def test_the_checker_counts_only_direct_top_level_blocks_and_real_reasons(tmp_path):
    """Only imports directly in the module, in ``if TYPE_CHECKING:`` or in a ``try:`` count as top level, and a lazy
    import's reason is a comment with words: not a ``#`` in a string, not ``# noqa`` alone."""
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent("""\
        import os
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import numpy
        try:
            import yaml
        except ImportError:
            import json
        if os.environ.get("X"):
            import csv
        try:
            if os.sep:
                import shlex
        finally:
            pass
        if __package__ in (None, ""):
            import _bootstrap  # noqa: F401
        def f():
            import matplotlib  # noqa: F401
            import onnx  # noqa
            import nncf  # noqa: F401  optional, and slow to import
            s = "# a string"; import openvino
        """))
    got = {name: (top, why) for name, _, top, why in _imports(path)}
    assert got == {"os": (True, ""), "typing": (True, ""), "numpy": (True, ""), "yaml": (True, ""),
                   "json": (True, ""), "csv": (False, ""), "shlex": (False, ""), BOOTSTRAP: (True, ""),
                   "matplotlib": (False, ""), "onnx": (False, ""), "nncf": (False, "optional, and slow to import"),
                   "openvino": (False, "")}
