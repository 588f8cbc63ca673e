#!/usr/bin/env python3
"""onnxruntime's static int8 quantization (QDQ, per-channel int8 weights, int8 activations)
of an ImageNet model on the disjoint-photo protocol (scripts/prepare_protocol.py): the
reference row of the ImageNet tables of `cargo xtask accuracy`.

    python3 scripts/ort_protocol.py [--calib-sizes 64,256]
    python3 scripts/ort_protocol.py --model target/zoo/efficientnet_lite0.onnx \
        --normalisation centered --out data/protocol/onnxruntime_int8_efficientnet_lite0.json

For each calibration size N it quantizes the model (default models/mobilenet_v2.onnx) with
`quantize_static` on the first N crops of data/full/protocol/[SUB/]calib.npy (the same
crops lutq calibrates on; SUB = the normalisation's folder, none for torchvision's ImageNet
mean/std, `centered` for (v - 127) / 128) and scores the result, run both as the QDQ
model's own arithmetic and through this CPU's fused int8 kernels (scripts/ort_int8.py says
why both), against the fp32 model run by onnxruntime on eval.npy (other photos) and eval_calib_photos.npy (other crops of the
calibration photos) of the same folder. Writes --out (default
data/protocol/onnxruntime_int8.json; committed; the xtask checks that the input files'
sha256 still match data/protocol/files.csv).

Needs onnx 1.22.0, onnxruntime 1.32.0, numpy 2.4.6 (scripts/requirements.txt).
"""
import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_int8 import cpu, quantize_int8, run, score, session, session_qdq_semantics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "models/mobilenet_v2.onnx"
FULL = "data/full/protocol"
SETS = ("eval.npy", "eval_calib_photos.npy")
OUT = ROOT / "data" / "protocol" / "onnxruntime_int8.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-sizes", default="64,256")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--normalisation", choices=("imagenet", "centered"), default="imagenet")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sub = "" if args.normalisation == "imagenet" else args.normalisation + "/"
    files = [sub + f for f in ("calib.npy", *SETS)]
    with open(ROOT / "data" / "protocol" / "files.csv") as f:
        hashes = {r["file"]: r["sha256"] for r in csv.DictReader(f)}
    for f in files:
        got = hashlib.sha256((ROOT / FULL / f).read_bytes()).hexdigest()
        if got != hashes.get(f):
            raise SystemExit(f"{FULL}/{f} does not match data/protocol/files.csv: "
                             "run scripts/prepare_protocol.py")
    calib = np.load(ROOT / FULL / files[0])
    data = {s: np.load(ROOT / FULL / (sub + s)) for s in SETS}
    fp32 = session(str(ROOT / args.model))
    ref = {s: run(fp32, x) for s, x in data.items()}
    results = []
    for n in [int(v) for v in args.calib_sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            path = quantize_int8(str(ROOT / args.model), calib[:n], tmp)
            q, q_kernels = session_qdq_semantics(path), session(path)
            row = {"calibration_samples": n, "kernels": {}}
            for s, x in data.items():
                row[s] = score(ref[s], run(q, x))
                row["kernels"][s] = score(ref[s], run(q_kernels, x))
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
    command = "python3 scripts/ort_protocol.py --calib-sizes " + args.calib_sizes
    if args.model != MODEL:
        command += f" --model {args.model} --normalisation {args.normalisation} --out " + \
            str(args.out.resolve().relative_to(ROOT))
    out = {
        "mode": "onnxruntime int8 (QDQ, per-channel)",
        "kernels_mode": f"onnxruntime int8, this CPU's kernels ({cpu()})",
        "execution": "results: the QDQ model's own arithmetic (graph optimizations off, no fused "
                     "int8 kernel: what an exact int8 engine computes on any CPU); results[].kernels: "
                     "the default session's fused int8 kernels, which saturate without VNNI "
                     "(scripts/ort_int8.py)",
        "command": command,
        "quantize_static": "QuantFormat.QDQ, per_channel=True, activation_type=QInt8, "
                           "weight_type=QInt8, default MinMax calibration, after quant_pre_process "
                           "(scripts/ort_int8.py quantize_int8); batch 1, one thread",
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__},
        "model": args.model,
        "inputs": {f: hashes[f] for f in files},
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
