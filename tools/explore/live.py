"""Live predictions for the explorer: an image's bytes in, the :class:`deploy.predictor.Predictor`'s detections out.

The image is decoded as ``Predictor.predict`` reads a file (``cv2.IMREAD_COLOR``: BGR, alpha dropped), so a
dropped file gets exactly the detections ``Predictor(weight, ...).predict(path)`` gives. Labels become the
ground truth's category ids when the model's class names are the ground truth's (a model of that dataset), else
the model's own indices with its own names. Calls are serialised: one model, one forward at a time.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from deploy.predictor import Predictor
from utils.errors import UserError

__all__ = ["LiveModel", "MAX_UPLOAD_BYTES"]

MAX_UPLOAD_BYTES = 64 << 20  # a larger upload is refused before it is read


class LiveModel:
    """A :class:`Predictor` behind a lock, with the category ids of the explorer's ground truth where they match."""

    def __init__(self, weight: str | Path, *, backend: str = "pytorch", precision: str = "fp32",
                 calib: Optional[str] = None, device: str = "cpu", categories: Optional[dict[int, str]] = None):
        self.weight = Path(weight)
        try:
            self.predictor = Predictor(str(weight), backend=backend, precision=precision, calib=calib, device=device)
        except (ValueError, FileNotFoundError) as e:  # a bad file or combination: the user's, one line
            raise UserError(f"--weight {weight}: {e}") from None
        names = [str(n) for n in self.predictor.class_names]
        by_name = {name: cid for cid, name in (categories or {}).items()}
        if names and all(n in by_name for n in names):
            self.category_ids = [by_name[n] for n in names]
        else:
            self.category_ids = list(range(len(names)))
        self.classes = [{"id": cid, "name": n} for cid, n in zip(self.category_ids, names)]
        self._lock = threading.Lock()

    def info(self) -> dict:
        p = self.predictor
        return {"weight": self.weight.name, "backend": p.backend, "precision": p.precision,
                "device": str(p.device), "classes": self.classes}

    def predict_bytes(self, data: bytes) -> dict:
        """Detections (``box`` xywh in the image's pixels, ``cat``, ``score``) of an encoded image, its size and the
        model's time; a ValueError for bytes that are not an image."""
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise ValueError("not an image file OpenCV can read (JPEG, PNG, BMP, TIFF, WebP...)")
        with self._lock:
            start = time.perf_counter()
            det = self.predictor.predict(image)
            seconds = time.perf_counter() - start
        boxes = det["boxes"].astype(np.float64)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        return {"width": int(image.shape[1]), "height": int(image.shape[0]), "latency_ms": 1000.0 * seconds,
                "dets": [{"box": b.tolist(), "cat": self.category_ids[int(k)], "score": float(s)}
                         for b, k, s in zip(xywh, det["labels"], det["scores"])]}
