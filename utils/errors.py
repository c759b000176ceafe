"""The one exception type for bad user input.

A :class:`UserError` says what is wrong with something the user gave (a file, an
id, a category, a config value, a data folder) in one sentence naming it. The
scripts' entry (:func:`utils.script.run_script`) prints that sentence and exits with
status 2, without a traceback; every other exception is a bug and keeps its
traceback. Modules subclass it together with the builtin type they raised before
(``class ConfigError(UserError, ValueError)``), so existing ``except ValueError``
code is unchanged.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the file / key / id and the problem."""
