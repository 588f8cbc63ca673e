"""onnxruntime single-thread latency, fp32 and static int8 (QDQ, per-channel weights), for
`cargo xtask bench-int`.

Usage: python3 scripts/ort_bench.py MODEL.onnx CALIB.npy ITERS [CALIB_LIMIT]
Prints one JSON object: median milliseconds per inference (batch 1, warm, one thread) of
the fp32 model and of its int8 quantization, calibrated on CALIB.npy exactly as the
accuracy table's reference row (scripts/ort_int8.py).
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_int8 import quantize_int8, session  # noqa: E402


def median_ms(sess, x, iters):
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


def main():
    model, calib, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    calib_x = np.load(calib).astype(np.float32)[:limit]
    x = calib_x[:1]
    fp32 = session(model)
    result = {"fp32_ms": median_ms(fp32, x, iters)}
    with tempfile.TemporaryDirectory() as tmp:
        result["int8_ms"] = median_ms(session(quantize_int8(model, calib_x, tmp)), x, iters)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
