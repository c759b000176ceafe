"""A config written out in full, each key with its comment from ``config/schema.py``.

``python -m config PRESET`` prints one preset resolved (the schema's defaults, the preset's ``_base_`` chain,
its own keys and any ``--opts``); ``config/README.md`` is generated from the schema and every preset, and
``tests/config/test_config.py`` checks that it is up to date.
"""
from __future__ import annotations

import dataclasses
import fractions
import inspect
import io
import math
import re
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from config.loader import config_to_dict, load_config
from config.schema import Config

CONFIG_DIR = Path(__file__).resolve().parent
LISTING = CONFIG_DIR / "README.md"


def _class_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line in the class's source."""
    comments = {}
    source = textwrap.dedent(inspect.getsource(cls))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        field = re.match(r"\s*(\w+)\s*:", tok.line) if tok.type == tokenize.COMMENT else None
        if field:
            comments[field.group(1)] = tok.string.lstrip("#").strip()
    return comments


def field_comments(cls: type = Config, prefix: str = "") -> dict[str, str]:
    """Every dotted key of the schema (in schema order) -> its comment ('' where it has none)."""
    out: dict[str, str] = {}
    comments = _class_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(field_comments(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = comments.get(f.name, "")
    return out


def family_names(cls: type = Config, prefix: str = "") -> dict[str, tuple[str, ...]]:
    """Every dotted key whose type is a family's names (a ``Literal``) -> those names, in schema order."""
    out: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(family_names(tp, f"{prefix}{f.name}."))
        elif typing.get_origin(tp) is typing.Literal:
            out[prefix + f.name] = typing.get_args(tp)
    return out


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _fraction(value: float) -> Optional[str]:
    """``"1/1500"`` for a float that is exactly a fraction with a small denominator but prints long, else None."""
    if len(repr(value)) <= 10 or not math.isfinite(value):
        return None
    f = fractions.Fraction(value).limit_denominator(10000)
    return f"{f.numerator}/{f.denominator}" if f.numerator / f.denominator == value else None


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML that reads back to it (lists in flow style; a float such as 1 / 1500 as the
    fraction ``1/1500``, which the loader reads back to the same float)."""
    if isinstance(value, float) and _fraction(value):
        return _fraction(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("\n...\n").strip()


def format_config(cfg: Config) -> str:
    """The whole config as YAML, every key on its own line with its schema comment; it loads back to ``cfg``."""
    comments = field_comments()
    lines, section = [], ()
    for key, value in _flat(config_to_dict(cfg)).items():
        *path, name = key.split(".")
        common = next((i for i, (a, b) in enumerate(zip(path, section)) if a != b), min(len(path), len(section)))
        lines += [f"{'  ' * i}{part}:" for i, part in enumerate(path) if i >= common]
        section = tuple(path)
        comment = f"  # {comments[key]}" if comments[key] else ""
        lines.append(f"{'  ' * len(path)}{name}: {yaml_value(value)}{comment}")
    return "\n".join(lines) + "\n"


def changed_keys(cfg: Config, base: Optional[Config] = None) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (value in ``cfg``, value in ``base``) for every key where they differ (``base``: defaults)."""
    a, b = _flat(config_to_dict(cfg)), _flat(config_to_dict(base if base is not None else Config()))
    return {k: (a[k], b[k]) for k in a if yaml_value(a[k]) != yaml_value(b[k])}


def presets() -> list[Path]:
    """The YAML presets in ``config/``, by name."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def _header_comment(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _preset_section(path: Path) -> list[str]:
    base = (yaml.safe_load(path.read_text()) or {}).get("_base_")
    changes = changed_keys(load_config(path))
    lines = [f"### `{path.name}`", "", *textwrap.wrap(_header_comment(path), 120), ""]
    lines += [f"Derives from {f'`{base}`' if base else 'the schema'}; "
              f"it changes {len(changes)} of the schema's defaults:", "",
              "| key | value | default |", "|---|---|---|"]
    lines += [f"| `{k}` | `{yaml_value(v)}` | `{yaml_value(d)}` |" for k, (v, d) in changes.items()]
    return lines + [""]


def listing() -> str:
    """The text of ``config/README.md``: every key with its default and comment, then each preset's changes."""
    lines = ["# Configuration reference", "",
             "Generated by `python -m config --write-listing` from `config/schema.py` (the one place of defaults)",
             "and the presets; `tests/config/test_config.py` checks that it is up to date. Do not edit it by hand.", "",
             "## Every key, its default and its meaning", "",
             "The defaults are the official YOLOF R50-C5 1x recipe (megvii-model/YOLOF `yolof.res50.C5.1x`) unless",
             "the comment says otherwise. `python -m config PRESET` prints a preset in this form, resolved.", "",
             "```yaml", format_config(Config()).rstrip("\n"), "```", "",
             "## The names of each family", "",
             "A key below takes one of these names (the loader refuses any other, naming the key and the names).", ""]
    for key, names in family_names().items():
        lines += textwrap.wrap(f"- `{key}`: " + ", ".join(f"`{n}`" for n in names), 120, subsequent_indent="  ",
                               break_on_hyphens=False)
    lines += ["", "## The presets", "",
             "Each preset states only what differs from the schema, or from the preset it derives from through",
             "`_base_`. The tables list what each one changes from the defaults once resolved.", ""]
    for path in presets():
        lines += _preset_section(path)
    return "\n".join(lines)
