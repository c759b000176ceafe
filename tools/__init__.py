"""One-off command-line tools (``python tools/<name>.py`` or ``python -m tools.<name>``); the library never imports
them."""
