#!/usr/bin/env python3
"""Commit small Fashion-MNIST slices as NPY, from Debian's `dataset-fashion-mnist` package.

Writes, under data/fashion_mnist/:
  test_x.npy   float32 (1000,1,28,28)  pixel/255 of the first 1000 test images (t10k)
  test_y.npy   int64   (1000,)         their labels
  train_x.npy  float32 (1000,1,28,28)  pixel/255 of the first 1000 training images
  train_y.npy  int64   (1000,)         their labels

The full sets (60k/10k) are converted by `cargo xtask data` into data/full/ (not committed).

Usage (from the repository root):  python scripts/prepare_fashion_mnist.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fashion import IDX_DIR, read_idx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "fashion_mnist"
N = 1000


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = IDX_DIR / f"{prefix}-images-idx3-ubyte.gz"
        labels = IDX_DIR / f"{prefix}-labels-idx1-ubyte.gz"
        for p in (images, labels):
            print(f"source {hashlib.sha256(p.read_bytes()).hexdigest()}  {p}")
        x = read_idx(images)[:N].astype(np.float32) / np.float32(255.0)
        y = read_idx(labels)[:N].astype(np.int64)
        np.save(OUT / f"{split}_x.npy", np.ascontiguousarray(x[:, None, :, :]))
        np.save(OUT / f"{split}_y.npy", y)
    for p in sorted(OUT.glob("*.npy")):
        print(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(ROOT)}  {p.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
