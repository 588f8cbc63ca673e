#!/usr/bin/env python3
"""MLPerf Tiny reference models: fp32 .tflite -> ONNX (tf2onnx, opset 13), checked against TFLite.

Sources: github.com/mlcommons/tiny at commit TINY_COMMIT (Apache-2.0; the anomaly-detection
code is MIT, Hitachi). Three models are taken as the repository's fp32 .tflite files. The
keyword-spotting file `kws_ref_model_float32.tflite` is *not* fp32 (it was written with
`Optimize.DEFAULT`: its conv weights are int8 with float activations, "dynamic range"
quantization), so the fp32 KWS TFLite is rebuilt from the repository's SavedModel
(`kws_ref_model/`) with TensorFlow's TFLiteConverter and no optimizations. The SavedModel's
optimizer slot references are dropped first: TF 2.21 cannot restore its Adam slots (the
weights are untouched).

The .tflite inputs are committed under models/zoo/tflite/ (with sha256 checks), so the
conversion reruns without the MLPerf repository; `--tiny-repo DIR` (a clone or the bare git
directory of mlcommons/tiny) re-extracts them at TINY_COMMIT and checks they are identical.

Usage: python scripts/zoo/convert_tflite.py [--tiny-repo DIR] [--only NAME]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import MODELS, check_sha, max_abs, ort_run, quiet_tf, rel, sha256  # noqa: E402

TINY_COMMIT = "1afd2c9820f795965a6134facd0b4dfae41ef23f"
TFLITE_DIR = MODELS / "tflite"

# name -> (path in mlcommons/tiny, sha256 of that file, committed tflite, its sha256)
MLPERF = {
    "mlperf_ic_resnet8": dict(
        src="benchmark/training/image_classification/trained_models/pretrainedResnet.tflite",
        src_sha="b5c0046d6e0328b4956afd6baa29555a29b1f1c65bdd45aaed75b7cd484d9f79",
        tflite="pretrainedResnet.tflite"),
    "mlperf_kws_dscnn": dict(
        src="benchmark/training/keyword_spotting/trained_models/kws_ref_model/",
        src_sha={
            "saved_model.pb": "",
            "variables/variables.data-00000-of-00001": "",
            "variables/variables.index": "",
        },
        tflite="kws_ref_model_fp32.tflite"),
    "mlperf_vww_mobilenetv1": dict(
        src="benchmark/training/visual_wake_words/trained_models/vww_96_float.tflite",
        src_sha="115bbc094d2119561320a21f01b6500a18bea8cc8589282ab007097bec8af38c",
        tflite="vww_96_float.tflite"),
    "mlperf_ad_autoencoder": dict(
        src="benchmark/training/anomaly_detection/trained_models/ad01_fp32.tflite",
        src_sha="c66636f4d7f8af8b10518e7be750a22c9d8d46ec97326b40b0d94c097e0aad9b",
        tflite="ad01_fp32.tflite"),
}
# sha256 of the committed .tflite inputs (the KWS one is built by this script)
TFLITE_SHA = {
    "pretrainedResnet.tflite": "b5c0046d6e0328b4956afd6baa29555a29b1f1c65bdd45aaed75b7cd484d9f79",
    "kws_ref_model_fp32.tflite": "",
    "vww_96_float.tflite": "115bbc094d2119561320a21f01b6500a18bea8cc8589282ab007097bec8af38c",
    "ad01_fp32.tflite": "c66636f4d7f8af8b10518e7be750a22c9d8d46ec97326b40b0d94c097e0aad9b",
}
# the repository's dynamic-range KWS file, kept only for a comparison
KWS_HYBRID = ("benchmark/training/keyword_spotting/trained_models/kws_ref_model_float32.tflite",
              "e5004c6f1012246e33fa068d8488325538e0444073cd361f5a7edb40c73f12d2")


def _git_show(repo: Path, path: str) -> bytes:
    gitdir = repo if (repo / "HEAD").exists() and not (repo / ".git").exists() else repo / ".git"
    return subprocess.run(["git", f"--git-dir={gitdir}", "show", f"{TINY_COMMIT}:{path}"],
                          check=True, capture_output=True).stdout


def kws_saved_model_to_tflite(saved_model_dir: Path, out: Path) -> None:
    quiet_tf()
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "kws"
        shutil.copytree(saved_model_dir, dst)
        sm = saved_model_pb2.SavedModel()
        sm.ParseFromString((dst / "saved_model.pb").read_bytes())
        for node in sm.meta_graphs[0].object_graph_def.nodes:
            del node.slot_variables[:]
        (dst / "saved_model.pb").write_bytes(sm.SerializeToString())
        tf.get_logger().setLevel("ERROR")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(dst))
        out.write_bytes(conv.convert())


def extract_from_repo(repo: Path) -> None:
    """Re-extract the .tflite inputs from mlcommons/tiny and check them against the committed ones."""
    TFLITE_DIR.mkdir(parents=True, exist_ok=True)
    for name, m in MLPERF.items():
        if name == "mlperf_kws_dscnn":
            with tempfile.TemporaryDirectory() as d:
                sd = Path(d) / "kws_ref_model"
                for f, want in m["src_sha"].items():
                    b = _git_show(repo, m["src"] + f)
                    (sd / f).parent.mkdir(parents=True, exist_ok=True)
                    (sd / f).write_bytes(b)
                    if want:
                        check_sha(sd / f, want)
                    print(f"  {m['src']}{f}: {len(b)} bytes, sha256 {sha256(sd / f)}")
                kws_saved_model_to_tflite(sd, TFLITE_DIR / m["tflite"])
        else:
            b = _git_show(repo, m["src"])
            (TFLITE_DIR / m["tflite"]).write_bytes(b)
        p = TFLITE_DIR / m["tflite"]
        print(f"  {rel(p)}: {p.stat().st_size} bytes, sha256 {sha256(p)}")
        if TFLITE_SHA[m["tflite"]]:
            check_sha(p, TFLITE_SHA[m["tflite"]])
    hy = _git_show(repo, KWS_HYBRID[0])
    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
        f.write(hy)
    check_sha(f.name, KWS_HYBRID[1])
    Path(f.name).unlink()


def tf2onnx_convert(tflite: Path, out: Path) -> str:
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(out),
           "--opset", "13"]
    env = dict(__import__("os").environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"tf2onnx failed on {tflite}:\n{r.stdout}\n{r.stderr}")
    return " ".join(["python", "-m", "tf2onnx.convert", "--tflite", rel(tflite), "--output", rel(out),
                     "--opset", "13"])


def tflite_run(tflite: Path, x: np.ndarray) -> np.ndarray:
    quiet_tf()
    import warnings

    warnings.filterwarnings("ignore")
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(tflite), num_threads=1)
    it.allocate_tensors()
    i = it.get_input_details()[0]
    o = it.get_output_details()[0]
    ys = []
    for k in range(len(x)):
        it.set_tensor(i["index"], x[k:k + 1])
        it.invoke()
        ys.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(ys)


def verify(tflite: Path, onnx_path: Path, x: np.ndarray) -> dict:
    a = tflite_run(tflite, x)
    b = ort_run(onnx_path, x)[0]
    b8 = ort_run(onnx_path, x, batch=8)[0]
    res = {"samples": int(len(x)), "max_abs_tflite_vs_ort": max_abs(a, b),
           "max_abs_ort_batch1_vs_batch8": max_abs(b, b8),
           "max_abs_output": float(np.max(np.abs(a)))}
    if a.ndim == 2 and a.shape[1] > 1 and a.shape[1] <= 1000 and a.shape[1] != 640:
        res["top1_agree"] = float(np.mean(a.argmax(1) == b.argmax(1)))
    return res


def input_name_and_shape(tflite: Path) -> tuple[str, list[int]]:
    quiet_tf()
    import warnings

    warnings.filterwarnings("ignore")
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(tflite))
    d = it.get_input_details()[0]
    return d["name"], d["shape"].tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-repo", type=Path, help="mlcommons/tiny clone or bare git dir")
    ap.add_argument("--only")
    a = ap.parse_args()
    if a.tiny_repo:
        extract_from_repo(a.tiny_repo)
    for name, m in MLPERF.items():
        if a.only and name != a.only:
            continue
        t = TFLITE_DIR / m["tflite"]
        print(name, tf2onnx_convert(t, MODELS / f"{name}.onnx"), sha256(MODELS / f"{name}.onnx"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
