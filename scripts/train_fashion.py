#!/usr/bin/env python3
"""Train lutq's two Fashion-MNIST reference CNNs and export them to ONNX (BatchNorm kept).

  fashion_resnet8       ResNet-8 as in MLPerf Tiny's image-classification model: 3x3 conv stem
                        (16 ch), three residual stages of 16/32/64 channels (stride 1/2/2),
                        1x1 conv + BN shortcut where the shape changes, residual Add, global
                        average pool, flatten, fully connected.
  fashion_mobilenetv2   MobileNetV2-style: 3x3 conv stem (stride 1 at 28x28), inverted
                        residual blocks (1x1 expansion t, 3x3 depthwise, linear 1x1 projection),
                        ReLU6, residual Add where stride 1 and same channels, 1x1 head conv,
                        global average pool, flatten, fully connected.

Data: the Fashion-MNIST IDX files of Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist, gzipped), input = pixel/255 as float32 (N,1,28,28), no
mean/std. Augmentation: random crop with 2-pixel zero padding and horizontal flip.
CPU only, seeds fixed, torch.use_deterministic_algorithms(True).

Export: TorchScript exporter, opset 13, do_constant_folding=False, input "input" and output
"logits" with a dynamic batch dimension. The script checks that the graph uses only
Conv/BatchNormalization/Relu/Clip/Add/GlobalAveragePool/Flatten/Gemm (plus the Constant nodes
that feed Clip's min/max) and reports fp32 top-1 accuracy on the full 10k test set from torch
and from onnxruntime.

Usage (from the repository root); the committed models were made with
  python scripts/train_fashion.py resnet8 --epochs 12 --channels-last --threads 1
  python scripts/train_fashion.py mobilenetv2 --epochs 12 --channels-last --threads 1
(run at the same time, on a shared 2-core machine; see models/README.md).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_export import export_keep_bn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
ALLOWED_OPS = {"Conv", "BatchNormalization", "Relu", "Clip", "Add", "GlobalAveragePool", "Flatten", "Gemm", "Constant"}


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    assert zero == 0 and dtype == 0x08, (path, zero, dtype)
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    assert data.size == int(np.prod(dims)), (path, dims, data.size)
    return data.reshape(dims)


def load_split(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(IDX_DIR / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(IDX_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    xt = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return xt.contiguous(), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Models


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3)
        self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + s)


class ResNet8(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, 16, 3), nn.ReLU())
        self.stage1 = BasicBlock(16, 16, 1)
        self.stage2 = BasicBlock(16, 32, 2)
        self.stage3 = BasicBlock(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = []
        if t != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += conv_bn(hidden, cout, 1)  # linear bottleneck: no activation
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Small(nn.Module):
    # (expansion t, out channels c, repeats n, first stride s)
    CONFIG = [(1, 16, 1, 2), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 1, 1)]

    def __init__(self, num_classes: int = 10, head: int = 128):
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(1, 16, 3), nn.ReLU6()]
        cin = 16
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [*conv_bn(cin, head, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


MODELS = {"resnet8": ResNet8, "mobilenetv2": MobileNetV2Small}


# ---------------------------------------------------------------------------------------------
# Training


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 2-pixel zero padding, then random horizontal flip."""
    n = x.shape[0]
    xp = F.pad(x, (2, 2, 2, 2))
    oy = torch.randint(0, 5, (n,), generator=gen)
    ox = torch.randint(0, 5, (n,), generator=gen)
    base = torch.arange(28)
    rows = (oy[:, None] + base)[:, :, None]  # (n,28,1)
    cols = (ox[:, None] + base)[:, None, :]  # (n,1,28)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    idx = torch.arange(n)[:, None, None]
    return xp[idx, 0, rows, cols].unsqueeze(1).contiguous()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += int((model(x[i : i + bs]).argmax(1) == y[i : i + bs]).sum())
    return correct / len(x)


def train(name: str, epochs: int, bs: int, lr: float, wd: float, seed: int, channels_last: bool, log) -> nn.Module:
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = MODELS[name]()
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model {name}: {nparams} parameters")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    gen = torch.Generator().manual_seed(seed)
    steps = (len(xtr) + bs - 1) // bs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.25)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    for ep in range(epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for i in range(steps):
            b = perm[i * bs : (i + 1) * bs]
            xb = augment(xtr[b], gen).contiguous(memory_format=fmt)
            loss = crit(model(xb), ytr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.detach().item()
        acc = accuracy(model, xte, yte)
        log(f"epoch {ep + 1}/{epochs} loss {tot / steps:.4f} test acc {acc:.4f} ({time.time() - t0:.0f}s)")
    return model.to(memory_format=torch.contiguous_format)


def inline_identity_initializers(m) -> int:
    """The TorchScript exporter deduplicates bit-identical parameters (e.g. two BatchNorm
    running_var tensors that happen to be equal) and re-creates the duplicates with Identity
    nodes. Replace each such Identity by a copy of the initializer under the output's name so
    that the graph only contains the operators lutq expects."""
    import onnx

    inits = {t.name: t for t in m.graph.initializer}
    keep, copies = [], []
    for n in m.graph.node:
        if n.op_type == "Identity" and len(n.input) == 1 and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            copies.append(t)
        else:
            keep.append(n)
    if copies:
        del m.graph.node[:]
        m.graph.node.extend(keep)
        m.graph.initializer.extend(copies)
    return len(copies)


def export(model: nn.Module, path: Path, log) -> dict:
    import onnx
    import onnxruntime as ort

    model.eval()
    export_keep_bn(model, torch.zeros(1, 1, 28, 28), path)
    m = onnx.load(str(path))
    n_inlined = inline_identity_initializers(m)
    if n_inlined:
        log(f"replaced {n_inlined} Identity nodes on deduplicated initializers by initializer copies")
        onnx.save(m, str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    log(f"ops: {dict(sorted(ops.items()))}")
    assert set(ops) <= ALLOWED_OPS, set(ops) - ALLOWED_OPS
    nbn = sum(isinstance(mod, nn.BatchNorm2d) for mod in model.modules())
    assert ops["BatchNormalization"] == nbn, (ops["BatchNormalization"], nbn)

    xte, yte = load_split("t10k")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(["logits"], {"input": xte[i : i + 1000].numpy()})[0] for i in range(0, 10000, 1000)])
    with torch.no_grad():
        ref = torch.cat([model(xte[i : i + 1000]) for i in range(0, 10000, 1000)]).numpy()
    ort_acc = float((logits.argmax(1) == yte.numpy()).mean())
    torch_acc = float((ref.argmax(1) == yte.numpy()).mean())
    diff = float(np.abs(ref - logits).max())
    info = {
        "file": str(path.relative_to(ROOT)),
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "ops": dict(sorted(ops.items())),
        "torch_top1": torch_acc,
        "onnxruntime_top1": ort_acc,
        "max_abs_diff_torch_ort": diff,
    }
    log(json.dumps(info, indent=1))
    assert diff < 1e-3, diff
    return info


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--min-acc", type=float, default=0.92)
    ap.add_argument("--channels-last", action="store_true", help="train in NHWC memory format (faster on CPU)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out = args.out or ROOT / "models" / f"fashion_{args.model}.onnx"
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    log(f"args: {vars(args)}; torch {torch.__version__}")
    model = train(args.model, args.epochs, args.batch, args.lr, args.wd, args.seed, args.channels_last, log)
    info = export(model, out, log)
    log(f"wall time {time.time() - t0:.0f}s")
    if info["torch_top1"] < args.min_acc:
        log(f"FAILED: top-1 {info['torch_top1']:.4f} < {args.min_acc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
