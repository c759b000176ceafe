"""data/build.py: the loaders."""
from __future__ import annotations

import torch


def test_dataloader_workers_have_no_opencv_pool(tmp_path):
    import cv2

    from data.build import build_test_loader

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor(cv2.getNumThreads()), {}

    before = cv2.getNumThreads()
    try:
        loader = build_test_loader(Threads(), 1, num_workers=1)
        assert [int(images[0]) for images, _ in loader] == [1, 1]  # setNumThreads(0): getNumThreads() is 1
    finally:
        cv2.setNumThreads(before)
