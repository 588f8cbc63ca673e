"""onnxruntime's static int8 quantization (QDQ, per-channel weights) as the reference row
of lutq's accuracy table (`cargo xtask accuracy`).

Usage: python3 scripts/ort_int8.py MODEL.onnx CALIB.npy EVAL.npy [LABELS.npy|-] [CALIB_LIMIT]
Prints one JSON object: top-1 accuracy (with labels), top-1 agreement with the fp32 model
run by onnxruntime, and output SQNR in dB, over the evaluation samples.

Two executions of the same quantized file are scored:
- the reference (top-level fields): the QDQ model's own arithmetic, run with onnxruntime's
  graph optimizations off, so every DequantizeLinear yields float values and no fused
  integer kernel is involved. That is what any exact int8 engine computes (up to the
  rounding of the requantization), on every CPU;
- `kernels`: the default session, where onnxruntime fuses the QDQ pairs into its int8
  kernels (MLAS). Without VNNI (AVX2 only) those kernels multiply u8 by s8 with
  `vpmaddubsw`, whose int16 pair sums saturate, and the result depends on the CPU:
  MobileNetV2 reads ~6 dB there against ~11 dB on a VNNI machine. `cpu` names the CPU.
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def session_qdq_semantics(path):
    """A session that runs the QDQ model as written: no graph optimization, so no fused
    int8 kernel (see the module docstring)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def cpu():
    """The CPU's model name and whether it has the VNNI dot-product instructions that
    onnxruntime's int8 kernels need to avoid int16 saturation."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    name = next((l.split(":", 1)[1].strip() for l in text.splitlines()
                 if l.startswith("model name")), "unknown CPU")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines()
                  if l.startswith("flags")), [])
    vnni = [f for f in flags if "vnni" in f]
    return f"{name}, {'/'.join(vnni) if vnni else 'no VNNI'}"


def score(ref, q):
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    q = q.reshape(len(q), -1).astype(np.float64)
    return {
        "samples": int(len(ref)),
        "top1_agreement": float((ref.argmax(1) == q.argmax(1)).mean()),
        "sqnr_db": float(10 * np.log10((ref ** 2).sum() / ((ref - q) ** 2).sum())),
    }


def run(sess, x):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        self.items = iter([{name: x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def quantize_int8(model, calib_x, tmp):
    """onnxruntime's static int8 QDQ quantization of `model` (per-channel int8 weights,
    int8 activations) calibrated on `calib_x`; returns the path of the quantized model
    inside the directory `tmp`."""
    pre = os.path.join(tmp, "pre.onnx")
    out = os.path.join(tmp, "int8.onnx")
    quant_pre_process(model, pre)
    name = session(model).get_inputs()[0].name
    quantize_static(pre, out, Reader(name, calib_x),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main():
    model, calib, data = sys.argv[1:4]
    labels = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    limit = int(sys.argv[5]) if len(sys.argv) > 5 else 256
    calib_x = np.load(calib).astype(np.float32)[:limit]
    x = np.load(data).astype(np.float32)
    fp32 = session(model)
    ref = run(fp32, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = quantize_int8(model, calib_x, tmp)
        q = run(session_qdq_semantics(path), x)
        q_kernels = run(session(path), x)
    y = np.load(labels).reshape(-1)[: len(x)] if labels else None

    def scored(out, mode):
        r = {"mode": mode, **score(ref, out), "calibration_samples": int(len(calib_x))}
        if y is not None:
            r["top1_accuracy"] = float((out.reshape(len(x), -1).argmax(1) == y).mean())
            r["fp32_top1_accuracy"] = float((ref.reshape(len(x), -1).argmax(1) == y).mean())
        return r

    result = scored(q, "onnxruntime int8 (QDQ, per-channel)")
    result["kernels"] = scored(q_kernels, f"onnxruntime int8, this CPU's kernels ({cpu()})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
