"""Metrics: the evaluator shared by train.py and eval.py, COCO (pycocotools) and VOC (devkit) scoring, PR plots."""
