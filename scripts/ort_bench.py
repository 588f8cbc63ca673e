"""onnxruntime single-thread latency, fp32 and static int8 (QDQ, per-channel weights), for
`cargo xtask bench-int`.

Usage: python3 scripts/ort_bench.py MODEL.onnx CALIB.npy [CALIB_LIMIT]
Builds the fp32 session and the int8 one (calibrated on CALIB.npy exactly as the accuracy
table's reference row, scripts/ort_int8.py), prints `ready`, then serves requests on
stdin, one per line: `fp32 N` or `int8 N` runs N warm inferences (batch 1, one thread)
and prints their times in milliseconds as one JSON list. Serving lets the caller
interleave onnxruntime's runs with its own on a shared, noisy machine.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_int8 import quantize_int8, session  # noqa: E402


def times_ms(sess, x, iters):
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append(1e3 * (time.perf_counter() - t))
    return times


def main():
    model, calib = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    calib_x = np.load(calib).astype(np.float32)[:limit]
    x = calib_x[:1]
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {"fp32": session(model), "int8": session(quantize_int8(model, calib_x, tmp))}
        for s in sessions.values():
            times_ms(s, x, 3)
        print("ready", flush=True)
        for line in sys.stdin:
            kind, n = line.split()
            print(json.dumps(times_ms(sessions[kind], x, int(n))), flush=True)


if __name__ == "__main__":
    main()
