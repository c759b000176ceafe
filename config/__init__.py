"""Configuration: typed, frozen dataclasses loaded from YAML presets.

``load_config(path, overrides)`` reads a YAML preset (which may derive from a
base through ``_base_: other.yaml``), applies ``overrides`` (a dict of dotted
keys such as ``{"solver.base_lr": 0.01}``, or ``["solver.base_lr=0.01"]``
strings from the command line), validates every key and type against the
dataclasses in :mod:`config.schema`, and returns a frozen :class:`Config`.
Unknown keys and wrong types raise :class:`ConfigError` naming the key.
Config files are data: nothing in them is executed.
"""
from config.loader import ConfigError, config_to_dict, load_config, parse_overrides
from config.schema import Config

__all__ = ["Config", "ConfigError", "config_to_dict", "load_config", "parse_overrides"]
