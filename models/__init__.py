"""YOLOF models. ``build_model(cfg)`` is the entry point; each concept has its own module."""
from models.build import build_model

__all__ = ["build_model"]
