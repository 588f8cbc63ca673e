"""onnxruntime's static int8 quantization (QDQ, per-channel weights) as the reference row
of lutq's accuracy table (`cargo xtask accuracy`).

Usage: python3 scripts/ort_int8.py MODEL.onnx CALIB.npy EVAL.npy [LABELS.npy|-] [CALIB_LIMIT]
Prints one JSON object: top-1 accuracy (with labels), top-1 agreement with the fp32 model
run by onnxruntime, and output SQNR in dB, over the evaluation samples.
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
        q = run(session(quantize_int8(model, calib_x, tmp)), x)
    ref = ref.reshape(len(x), -1)
    q = q.reshape(len(x), -1)
    result = {
        "mode": "onnxruntime int8 (QDQ, per-channel)",
        "top1_agreement": float((ref.argmax(1) == q.argmax(1)).mean()),
        "sqnr_db": float(10 * np.log10((ref.astype(np.float64) ** 2).sum()
                                       / ((ref.astype(np.float64) - q) ** 2).sum())),
        "calibration_samples": int(len(calib_x)),
    }
    if labels:
        y = np.load(labels).reshape(-1)[: len(x)]
        result["top1_accuracy"] = float((q.argmax(1) == y).mean())
        result["fp32_top1_accuracy"] = float((ref.argmax(1) == y).mean())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
