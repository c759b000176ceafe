"""The error of a bad configuration file or value, and the one-line check the sections' ``check()`` methods use."""
from __future__ import annotations

from typing import Any

from utils.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


def check(ok: bool, key: str, why: str, *, got: Any) -> None:
    """Raise ``ConfigError("config key 'KEY': WHY, got VALUE")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"config key '{key}': {why}, got {got!r}")
