"""A COCO-format folder of synthetic images (``data.dataset: synthetic``), generated once and reused.

Layout: ``out_dir/{train,val}/NNNNNN.jpg``, ``out_dir/annotations/instances_{train,val}.json`` and
``out_dir/manifest.json``, which records the parameters: a folder whose manifest holds the same ones is up to
date, any other is regenerated. Images are JPEG at quality 95: about 4x smaller and 7x faster to encode than PNG
for these images (their noise textures), the file type of COCO, and its artefacts (a few grey levels) move no edge.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from config.schema import SyntheticConfig
from data.synthetic.render import MAX_BOX_FRACTION, ObjectSizes, render_sample
from data.synthetic.scenes import SCENE_STATS, draw_image_size, draw_scene
from data.synthetic.shapes import SHAPE_CLASSES

# Bump whenever the rendering or the on-disk layout changes, so that folders written before are regenerated.
FORMAT_VERSION = 2
IMAGE_EXT = ".jpg"
JPEG_QUALITY = 95
_IN_PROCESS = 128  # at most this many images are rendered without worker processes


def _params(cfg: SyntheticConfig) -> dict[str, Any]:
    """The manifest's parameters: what the files depend on, and only that (so unused keys keep a cache valid)."""
    h, w = int(cfg.image_size[0]), int(cfg.image_size[1])
    params = {
        "format_version": FORMAT_VERSION,
        "num_train": int(cfg.num_train),
        "num_val": int(cfg.num_val),
        "image_size": [h, w],
        "seed": int(cfg.seed),
        "num_objects": [int(cfg.num_objects[0]), int(cfg.num_objects[1])],
        "min_box": float(cfg.min_box),
        "max_box": float(cfg.max_box or MAX_BOX_FRACTION * min(h, w)),
        "classes": list(SHAPE_CLASSES),
        "image_ext": IMAGE_EXT,
        "jpeg_quality": JPEG_QUALITY,
    }
    if cfg.size_range:  # varied shapes (only then in the manifest: fixed-size caches stay valid)
        params["size_range"] = [int(cfg.size_range[0]), int(cfg.size_range[1])]
        params["max_aspect"] = float(cfg.max_aspect)
        params["max_box"] = float(cfg.max_box) if cfg.max_box else None
    if cfg.stats != "none":  # scenes drawn from a table (only then in the manifest, as size_range), and which table;
        for key in ("image_size", "num_objects", "min_box", "max_box"):  # the shapes' ranges are then unused
            del params[key]
        params["stats"] = cfg.stats
        params["stats_table"] = hashlib.sha1(repr(SCENE_STATS[cfg.stats]).encode()).hexdigest()[:12]
    return params


def load_manifest(out_dir: str | os.PathLike) -> dict | None:
    p = Path(out_dir) / "manifest.json"
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(out_dir: Path, params: dict) -> bool:
    m = load_manifest(out_dir)
    if not m or not m.get("complete") or m.get("params") != params:
        return False
    for split, n in (("train", params["num_train"]), ("val", params["num_val"])):
        if not (out_dir / "annotations" / f"instances_{split}.json").is_file():
            return False
        d = out_dir / split
        if not d.is_dir() or sum(1 for _ in d.iterdir()) != n:
            return False
    return True


def render_image(rng: np.random.Generator, cfg: SyntheticConfig):
    """(image, boxes, labels, areas or None) of one image of ``cfg``'s dataset, from the image's own stream ``rng``:
    a table's scene (its size and boxes drawn first), or the shapes' ranges (a drawn size first with size_range)."""
    stats = SCENE_STATS[cfg.stats]
    if stats is not None:
        size, extents = draw_scene(rng, stats)
        image, boxes, labels, areas = render_sample(rng, size, extents, return_areas=True)
        return image, boxes, labels, areas.tolist()
    size = draw_image_size(rng, cfg.size_range, cfg.max_aspect) if cfg.size_range else tuple(cfg.image_size)
    objects = ObjectSizes(tuple(cfg.num_objects), cfg.min_box, cfg.max_box)
    return (*render_sample(rng, size, objects), None)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core; no OpenCV thread pool inside workers


def _render_task(args) -> list[tuple]:
    """Render and write a chunk of images; returns per-image (boxes, labels, (h, w), areas)."""
    seeds, img_dir, names, cfg = args
    out = []
    for ss, name in zip(seeds, names):
        image, boxes, labels, areas = render_image(np.random.default_rng(ss), cfg)
        if not cv2.imwrite(str(Path(img_dir) / name), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {Path(img_dir) / name}")
        out.append((boxes.tolist(), labels.tolist(), image.shape[:2], areas))
    return out


def _write_split(split: str, ss: np.random.SeedSequence, n: int, root: Path, cfg: SyntheticConfig,
                 pool: ProcessPoolExecutor | None, chunk: int = 64) -> dict:
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    # one child stream per image: image i is the same whatever n is
    seeds = ss.spawn(n)
    names = [f"{i:06d}{IMAGE_EXT}" for i in range(n)]
    tasks = [(seeds[i:i + chunk], str(img_dir), names[i:i + chunk], cfg) for i in range(0, n, chunk)]
    results = pool.map(_render_task, tasks) if pool is not None else map(_render_task, tasks)
    images, anns = [], []
    ann_id = 1
    img_id = 1
    for chunk_res in results:
        for boxes, labels, (h, w), areas in chunk_res:
            images.append({"id": img_id, "file_name": names[img_id - 1], "height": int(h), "width": int(w)})
            for k, ((x0, y0, x1, y1), lab) in enumerate(zip(boxes, labels)):
                bw, bh = round(x1 - x0, 2), round(y1 - y0, 2)
                anns.append({
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": int(lab) + 1,
                    "bbox": [round(x0, 2), round(y0, 2), bw, bh],
                    # drawn scenes: the silhouette's area, as COCO's is its mask's
                    "area": round(bw * bh, 2) if areas is None else round(areas[k], 2),
                    "iscrowd": 0,
                })
                ann_id += 1
            img_id += 1
    coco = {
        "info": {"description": f"YOLOF synthetic shapes ({split})", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n_, "supercategory": "shape"} for i, n_ in enumerate(SHAPE_CLASSES)],
    }
    (root / "annotations").mkdir(exist_ok=True)
    with open(root / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    return {"images": len(images), "annotations": len(anns)}


def generate_synthetic_coco(out_dir: str | os.PathLike, cfg: SyntheticConfig = SyntheticConfig(), *,
                            workers: Optional[int] = None, force: bool = False, verbose: bool = False) -> Path:
    """Write (or reuse) the COCO-format dataset ``cfg`` (``data.synthetic``) describes in ``out_dir``; its folder.

    Deterministic from ``cfg.seed``: train and val use independent streams (``SeedSequence(seed).spawn(2)``) and
    every image its own child stream, so the val split (and each train image) is the same whatever ``num_train``
    is. Cached: a complete folder with the same parameters is returned at once. Otherwise the folder is generated
    into a temporary sibling and renamed into place (an interrupted run never leaves a folder that looks
    complete); an existing ``out_dir`` is only replaced when it is empty or was written here (has a manifest).

    ``cfg.stats: coco`` writes each object's silhouette area as its ``area`` (COCO: the mask's), so that COCO's
    small / medium / large split applies as it is; the shapes' ranges write the box area.

    ``workers``: rendering processes (None: ``min(4, cpu_count)``; 0 or 1: in-process; at most 128 images are
    always rendered in-process). They start with "spawn", so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. The output does not depend on them.
    """
    out_dir = Path(out_dir)
    if cfg.stats != "none" and cfg.size_range:
        raise ValueError(f"size_range and stats={cfg.stats!r} both draw the image sizes; give one of them")
    params = _params(cfg)
    if not force and _is_complete(out_dir, params):
        if verbose:
            print(f"synthetic dataset up to date: {out_dir}")
        return out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise FileExistsError(f"{out_dir} is not empty and was not written by generate_synthetic_coco; "
                              "refusing to overwrite it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    pool = None
    try:
        if workers > 1 and cfg.num_train + cfg.num_val > _IN_PROCESS:
            # "spawn", not "fork": forking a process whose OpenCV/BLAS/torch threads hold a lock
            # can deadlock the child (seen here after rendering in the parent).
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                       mp_context=mp.get_context("spawn"))
        ss_train, ss_val = np.random.SeedSequence(int(cfg.seed)).spawn(2)
        counts = {
            "train": _write_split("train", ss_train, int(cfg.num_train), tmp, cfg, pool),
            "val": _write_split("val", ss_val, int(cfg.num_val), tmp, cfg, pool),
        }
        manifest = {"params": params, "stats": counts, "complete": True}
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        if pool is not None:
            pool.shutdown()
            pool = None
        # swap into place
        if _is_complete(out_dir, params) and not force:  # someone else finished meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return out_dir
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"generated {counts['train']['images']} train / {counts['val']['images']} val images "
              f"({counts['train']['annotations']} / {counts['val']['annotations']} boxes) "
              f"in {time.perf_counter() - t0:.1f}s")
    return out_dir
