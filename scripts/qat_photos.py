#!/usr/bin/env python3
"""Quantization-aware fine-tuning of the ImageNet MobileNetV2 on the disjoint-photo
protocol's calibration crops, by distillation from its own fp32 outputs (no labels), and
the same measurement as lutq's post-training quantization: agreement and logit SQNR
against fp32 on crops of photos the training never saw.

The fake quantization, the BN fold, the sum-pool and the QDQ export are
`scripts/qat_fashion.py`'s (its module doc is the full description); only the data and the
loss differ:

  * Training images: the first `--train` crops of `data/full/protocol/calib.npy`
    (`scripts/prepare_protocol.py`: crops of photos disjoint from the evaluation photos),
    augmented by a horizontal flip and a random shift of up to 8 pixels (zero-padded, the
    normalized mean). The activation exponents (and with `--weight-exponents search` the
    weight exponents) are chosen on the first `--calib` of them, as lutq's PTQ does.
  * Loss: T^2 * KL(softmax(teacher / T) || softmax(student / T)) with the fp32 net (BN
    folded, unquantized) on the same augmented batch as the teacher: the net learns to
    match its own float outputs; there are no labels.
  * Evaluation: `data/full/protocol/eval.npy` (192 crops of other photos) and
    `eval_calib_photos.npy` (192 other crops of the calibration photos): top-1 agreement
    and SQNR of the logits against the fp32 net, before fine-tuning (the fake quantizer's
    own start: k-means tables, no GPTQ, no float targets) and after, in torch and in
    onnxruntime's reference execution of the exported file.

Seeded, CPU. Run from the repository root, e.g.

  python scripts/qat_photos.py --mode lut4-pot-channel --lut-tables 8 --epochs 12 \\
      --lr 1e-4 --out target/qat/mobilenet_v2_qat_lut4_channel.onnx

Measured at stop 36 (docs/quantization.md, "QAT on natural photos"): from the fake
quantizer's own start this data is far too little; the net learns the calibration photos
and stays far below lutq's PTQ on new ones.

It writes the model and its run record (OUT.json). lutq then compiles the file with the
mode it implies: `lutq run OUT.onnx --input data/full/protocol/eval.npy --output y.npy
--backend jit` (no calibration needed; the CLI asks for `--calib` only to size its
report).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_qdq_models import fold_bn  # noqa: E402
from qat_fashion import QatNet, cpu_name, export_qdq, optimizer_step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "data" / "full" / "protocol"


@torch.no_grad()
def logits(net: torch.nn.Module, x: torch.Tensor, bs: int = 16) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + bs]) for i in range(0, len(x), bs)])


def compare(ref: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement and SQNR (dB) of `y` against `ref`."""
    ref = ref.astype(np.float64)
    y = y.astype(np.float64)
    agree = float((ref.argmax(1) == y.argmax(1)).mean())
    err = ((y - ref) ** 2).sum()
    return agree, float(10 * np.log10((ref**2).sum() / max(err, 1e-30)))


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 8) -> torch.Tensor:
    """A horizontal flip (half the images) and a random shift of up to `shift` pixels
    per image, the uncovered border zero (the normalized mean)."""
    n, _, h, w = x.shape
    out = torch.zeros_like(x)
    flips = torch.rand(n, generator=gen) < 0.5
    dys = torch.randint(-shift, shift + 1, (n,), generator=gen)
    dxs = torch.randint(-shift, shift + 1, (n,), generator=gen)
    for i in range(n):
        xi = x[i].flip(-1) if flips[i] else x[i]
        dy, dx = int(dys[i]), int(dxs[i])
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[i, :, yd, xd] = xi[:, ys, xs]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenet_v2.onnx")
    ap.add_argument("--mode", choices=["lut4-pot-layer", "lut4-pot-channel"], required=True)
    ap.add_argument("--lut-tables", type=int, default=8, help="up to N tables per layer shared by groups of output channels")
    ap.add_argument("--lut-per-channel", action="store_true", help="a table per output channel")
    ap.add_argument("--weight-exponents", choices=["max", "search"], default="max")
    ap.add_argument("--train", type=int, default=256, help="training crops: the first N of data/full/protocol/calib.npy")
    ap.add_argument("--calib", type=int, default=64, help="crops that choose the exponents (the first N training crops)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate (cosine decay)")
    ap.add_argument("--refit-every", type=int, default=10, help="steps between LUT refits")
    ap.add_argument("--freeze", type=float, default=0.25, help="fraction of the last steps with frozen LUTs")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.lut_per_channel and args.lut_tables > 1:
        ap.error("--lut-per-channel and --lut-tables N > 1 are two different table layouts: pick one")
    if not 1 <= args.calib <= args.train:
        ap.error("--calib must be between 1 and --train")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    log(f"args: {vars(args)}; torch {torch.__version__}")
    for f in ("calib.npy", "eval.npy", "eval_calib_photos.npy"):
        if not (PROTOCOL / f).exists():
            sys.exit(f"{PROTOCOL / f} is missing: run scripts/prepare_protocol.py first (cargo xtask accuracy --help)")
    xtr = torch.from_numpy(np.load(PROTOCOL / "calib.npy")[: args.train].copy())
    sets = {
        "new photos": torch.from_numpy(np.load(PROTOCOL / "eval.npy")),
        "calibration photos": torch.from_numpy(np.load(PROTOCOL / "eval_calib_photos.npy")),
    }
    folded = fold_bn(onnx.load(str(args.model)))
    tables = 0 if args.lut_per_channel else args.lut_tables
    pot_channel = args.mode == "lut4-pot-channel"
    fp32 = QatNet(folded, pot_channel, tables, sum_pool=False, quantize=False)
    fp32.requires_grad_(False)
    ref = {k: logits(fp32, x).numpy() for k, x in sets.items()}

    net = QatNet(folded, pot_channel, tables, sum_pool=True)
    net.calibrate(xtr[: args.calib], weight_search=args.weight_exponents == "search")

    def measure(tag: str) -> dict[str, list[float]]:
        out = {}
        for k, x in sets.items():
            a, db = compare(ref[k], logits(net, x).numpy())
            out[k] = [a, db]
            log(f"{tag}: {k}: {a * 100:.2f} % agreement, {db:.2f} dB")
        return out

    before = measure("fake-quantized before fine-tuning")

    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = (len(xtr) + args.batch - 1) // args.batch
    total = args.epochs * steps_per_epoch
    freeze_at = int(total * (1.0 - args.freeze))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(total, 1))
    temp = args.temperature
    step = 0
    per_epoch = []
    for ep in range(args.epochs):
        te = time.time()
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for i in range(steps_per_epoch):
            x = augment(xtr[perm[i * args.batch : (i + 1) * args.batch]], gen)
            with torch.no_grad():
                t = fp32(x)
            s = net(x)
            loss = temp * temp * F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), log_target=True, reduction="batchmean")
            step = optimizer_step(net, opt, sched, loss, step, freeze_at, args.refit_every)
            tot += float(loss.detach())
        per_epoch.append(round(tot / steps_per_epoch, 5))
        log(f"epoch {ep + 1}/{args.epochs} distillation loss {tot / steps_per_epoch:.5f} ({time.time() - te:.0f}s)")

    after = measure("after fine-tuning")
    torch_new = logits(net, sets["new photos"]).numpy()
    m = export_qdq(net, folded)
    m.producer_name = "lutq scripts/qat_photos.py"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(args.out))
    data = args.out.read_bytes()

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ort_new = np.concatenate([sess.run(None, {name: sets["new photos"][i : i + 16].numpy()})[0] for i in range(0, 192, 16)])
    ort_vs_fp32 = compare(ref["new photos"], ort_new)
    torch_vs_ort = compare(ort_new, torch_new)
    log(f"onnxruntime's execution of the file: new photos {ort_vs_fp32[0] * 100:.2f} %, {ort_vs_fp32[1]:.2f} dB; torch against it {torch_vs_ort[0] * 100:.2f} %, {torch_vs_ort[1]:.1f} dB")
    info = {
        "file": str(args.out),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "before_agreement_sqnr_db": before,
        "after_agreement_sqnr_db": after,
        "distillation_loss_per_epoch": per_epoch,
        "onnxruntime_new_photos_agreement_sqnr_db": list(ort_vs_fp32),
        "torch_vs_onnxruntime_agreement_sqnr_db": list(torch_vs_ort),
        "wall_s": round(time.time() - t0),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
        "cpu": cpu_name(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return 0 if torch_vs_ort[0] >= 0.995 else 1


if __name__ == "__main__":
    sys.exit(main())
