#!/usr/bin/env python3
"""Train a small convolutional autoencoder on Fashion-MNIST and export it to ONNX: lutq's
bundled model with transposed convolutions (the decoder of segmentation and anomaly
detection nets, DBNet's upsampling head).

  fashion_autoencoder   encoder: Conv 3x3 s2 (1->16) + BN + ReLU, Conv 3x3 s2 (16->32) + BN + ReLU;
                        decoder: ConvTranspose 2x2 s2 (32->16, no overlap) + BN + ReLU,
                        ConvTranspose 3x3 s2 pad 1 output_padding 1 (16->8, overlapping taps) + BN + ReLU,
                        Conv 3x3 (8->1) + Sigmoid. 28x28 in, 28x28 out.

The two transposed convolutions cover both kinds lutq's import splits into phases: kernel =
stride (every output reads one tap) and kernel > stride with pads and output_padding (phases
with different tap counts). Loss: mean squared error against the input (pixels / 255), Adam,
seeded, CPU, deterministic. Data: the Debian package `dataset-fashion-mnist`, as in
`scripts/train_fashion.py`.

Export: `scripts/onnx_export.py` (opset 13, BatchNormalization kept), output "logits" (the
reconstruction). Next to the model, for lutq's tests: the reconstructions by torch of the
first 16 test images (`fashion_autoencoder_reference.npy`), which lutq's float interpreter
must reproduce.

Usage (from the repository root; the committed model was made with this command):

  python scripts/train_fashion_autoencoder.py --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import export_keep_bn  # noqa: E402
from train_fashion import load_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def autoencoder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 2, 2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 3, 2, padding=1, output_padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 1, 3, 1, 1),
        nn.Sigmoid(),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "fashion_autoencoder.onnx")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    xtr, _ = load_split("train")
    xte, _ = load_split("t10k")
    model = autoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), args.batch):
            x = xtr[perm[i : i + args.batch]]
            loss = ((model(x) - x) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        model.eval()
        with torch.no_grad():
            test = float(((model(xte) - xte) ** 2).mean())
        print(f"[{time.time() - t0:6.1f}s] epoch {ep + 1}: train mse {total / len(xtr):.5f}, test mse {test:.5f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_keep_bn(model, xte[:1], args.out)
    with torch.no_grad():
        ref = model(xte[:16]).numpy().astype(np.float32)
    ref_path = args.out.with_name(args.out.stem + "_reference.npy")
    np.save(ref_path, ref)
    for p in (args.out, ref_path):
        print(f"{p}: {p.stat().st_size} bytes, sha256 {hashlib.sha256(p.read_bytes()).hexdigest()}")
    print(f"torch {torch.__version__}, wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
