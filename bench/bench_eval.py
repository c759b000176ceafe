"""Benchmark COCO evaluation back-ends on a large synthetic-but-realistic set.

Builds a ground truth of ``--images`` images by repeating the coco_tiny val
images (and their annotations) under new image / annotation ids, plus
``--dets-per-image`` detections per image (jittered copies of ~80% of the
objects with random scores, padded with random false positives), writes both
as json into a temp dir, and times ``evaluation.coco_eval.evaluate_coco`` end to
end (reading both files, validation, evaluate, accumulate, summarize) for
each back-end. Prints the times, the ratio and the largest stat difference.

    python -m bench.bench_eval                     # 5000 images x 100 dets
    python -m bench.bench_eval --images 1000 --dets-per-image 50
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from utils.paths import REPO_ROOT

ROOT = REPO_ROOT

from evaluation.coco_eval import BACKENDS, STAT_NAMES, evaluate_coco

COCO_TINY = ROOT.parent / "shared/data/coco_tiny/annotations/instances_val2017.json"


def build(src: dict, n_images: int, *, dets_per_image: int, seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    by_img: dict[int, list[dict]] = {}
    for a in src["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    src_imgs = src["images"]
    cat_ids = np.array([c["id"] for c in src["categories"]])
    images, anns, dets = [], [], []
    ann_id = 1
    for i in range(n_images):
        im = src_imgs[i % len(src_imgs)]
        new_id = i + 1
        images.append(dict(im, id=new_id))
        W, H = im["width"], im["height"]
        img_dets = []
        for a in by_img.get(im["id"], []):
            anns.append(dict(a, id=ann_id, image_id=new_id))
            ann_id += 1
            if a["iscrowd"] or rng.random() < 0.2 or len(img_dets) >= dets_per_image:
                continue
            x, y, w, h = a["bbox"]
            j = rng.normal(0.0, 0.1, 4) * np.array([w, h, w, h])
            img_dets.append({
                "image_id": new_id,
                "category_id": a["category_id"],
                "bbox": [round(float(x + j[0]), 2), round(float(y + j[1]), 2),
                         round(float(max(w + j[2], 1.0)), 2), round(float(max(h + j[3], 1.0)), 2)],
                "score": round(float(rng.random()), 5),
            })
        n_fp = dets_per_image - len(img_dets)
        if n_fp > 0:
            w = rng.uniform(4, W / 2, n_fp)
            h = rng.uniform(4, H / 2, n_fp)
            x = rng.uniform(0, 1, n_fp) * (W - w)
            y = rng.uniform(0, 1, n_fp) * (H - h)
            cats = cat_ids[rng.integers(len(cat_ids), size=n_fp)]
            scores = rng.random(n_fp) * 0.8
            for k in range(n_fp):
                img_dets.append({
                    "image_id": new_id,
                    "category_id": int(cats[k]),
                    "bbox": [round(float(x[k]), 2), round(float(y[k]), 2),
                             round(float(w[k]), 2), round(float(h[k]), 2)],
                    "score": round(float(scores[k]), 5),
                })
        dets.extend(img_dets)
    gt = {"images": images, "annotations": anns, "categories": src["categories"]}
    return gt, dets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets-per-image", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    ap.add_argument("--gt", type=Path, default=COCO_TINY, help="source instances json to repeat")
    args = ap.parse_args()

    if not args.gt.is_file():
        print(f"source annotations not found: {args.gt}", file=sys.stderr)
        return 1
    src = json.loads(args.gt.read_text())
    t0 = time.perf_counter()
    gt, dets = build(src, args.images, dets_per_image=args.dets_per_image, seed=args.seed)
    print(f"built {len(gt['images'])} images, {len(gt['annotations'])} gt boxes, "
          f"{len(dets)} detections in {time.perf_counter() - t0:.1f} s")

    times, results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(dets))
        del gt, dets
        for b in args.backends:
            t = time.perf_counter()
            results[b] = evaluate_coco(gt_path, dt_path, backend=b)
            times[b] = time.perf_counter() - t
            print(f"{b:>17}: {times[b]:8.2f} s   AP={results[b].stats['AP']:.4f} "
                  f"AP50={results[b].stats['AP50']:.4f} AR100={results[b].stats['AR100']:.4f}")
    if len(times) == 2:
        a, b = BACKENDS
        print(f"speed-up {a} / {b}: {times[a] / times[b]:.1f}x")
        diff = max(abs(results[a].stats[n] - results[b].stats[n]) for n in STAT_NAMES)
        diff_cls = max(abs(results[a].per_class[n] - results[b].per_class[n]) for n in results[a].per_class)
        print(f"max |stat difference| = {diff:.3g}, max |per-class AP difference| = {diff_cls:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
