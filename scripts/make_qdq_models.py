"""QDQ versions of the bundled Fashion-MNIST ResNet-8, for lutq's QDQ import tests.

Writes into models/qdq/:
  fashion_resnet8_ort_qdq.onnx      onnxruntime's quantize_static (QDQ, int8 per-channel
                                    weights, int8 activations, float scales), calibrated
                                    on 64 Fashion-MNIST training images.
  fashion_resnet8_pot_int4.onnx     a QDQ model with power-of-two scales only: int4
                                    per-channel weights (DequantizeLinear of INT4
                                    initializers), int8 activations (QuantizeLinear →
                                    DequantizeLinear on every tensor an integer program
                                    holds: the input, Relu / Add outputs, Conv outputs
                                    no Relu reads), exponents from the same 64
                                    images; biases int32 on the accumulator grid.
  fashion_resnet8_ort_qdq_sym.onnx  the same with symmetric int8 activations and weights
                                    (zero points 0, float scales), the global pool
                                    and classifier left in float: the --round-scales
                                    test model.
  fashion_resnet8_qdq_inputs.npy    the first 64 test images (float32, N×1×28×28).
  fashion_resnet8_ort_qdq_logits.npy   onnxruntime 1.32 outputs of each model on them,
  fashion_resnet8_pot_int4_logits.npy  CPUExecutionProvider, one thread, default graph
                                       optimizations (QDQ groups fused into integer
                                       kernels such as QLinearConv);
  *_reference_logits.npy               the same with optimizations off
                                       (ORT_DISABLE_ALL): each QuantizeLinear,
                                       DequantizeLinear and float op as ONNX defines it.

Deterministic. Run from the repository root: python scripts/make_qdq_models.py
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "models", "qdq")
FLOAT = os.path.join(ROOT, "models", "fashion_resnet8.onnx")


def fashion(split, n):
    return np.load(os.path.join(ROOT, "data", "fashion_mnist", f"{split}_x.npy"))[:n]


class Reader(CalibrationDataReader):
    def __init__(self, x):
        self.items = iter([{"input": x[i : i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def fold_bn(model):
    """Folds every Conv → BatchNormalization pair (inference statistics) into the Conv."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep = []
    drop = set()
    for n in g.node:
        if n.op_type != "Conv" or id(n) in drop:
            continue
        users = consumers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "BatchNormalization":
            continue
        bn = users[0]
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        scale, bias, mean, var = (numpy_helper.to_array(inits[i]) for i in bn.input[1:5])
        w = numpy_helper.to_array(inits[n.input[1]])
        b = numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 else np.zeros(w.shape[0], np.float32)
        k = scale / np.sqrt(var + eps)
        w2 = (w * k[:, None, None, None]).astype(np.float32)
        b2 = ((b - mean) * k + bias).astype(np.float32)
        wn, bn_name = n.input[1] + "_folded", n.output[0] + "_bias_folded"
        g.initializer.extend([numpy_helper.from_array(w2, wn), numpy_helper.from_array(b2, bn_name)])
        del n.input[1:]
        n.input.extend([wn, bn_name])
        n.output[0] = bn.output[0]
        drop.add(id(bn))
    for n in g.node:
        if id(n) not in drop:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model


def pot_exponent(max_abs, qmax):
    """The largest e with max_abs · 2^e ≤ qmax (scale 2^-e)."""
    if max_abs <= 0:
        return 0
    return int(np.floor(np.log2(qmax / max_abs)))


def pot_int4_model(float_model, calib):
    m = fold_bn(onnx.load(FLOAT) if float_model is None else float_model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    # Activation ranges on the calibration images: every tensor an integer program
    # materializes (the input; Relu and Add outputs; Conv outputs that no Relu reads), so that the model is fully quantized as QAT exports are.
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    graph_outputs = {o.name for o in g.output}

    def materialized(n):
        out = n.output[0]
        if out in graph_outputs:
            return False
        # (Not the global pool: its 1/49 is no power of two, so lutq folds it into the
        # classifier, which a QDQ pair between them would prevent.)
        if n.op_type in ("Relu", "Add"):
            return True
        return n.op_type == "Conv" and readers.get(out, []) != ["Relu"]

    points = [g.input[0].name] + [n.output[0] for n in g.node if materialized(n)]
    probe = onnx.load_from_string(m.SerializeToString())
    for p in points[1:]:
        probe.graph.output.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(points[1:], {g.input[0].name: calib})
    ranges = {points[0]: float(np.abs(calib).max())}
    ranges.update({p: float(np.abs(o).max()) for p, o in zip(points[1:], outs)})
    new_nodes, new_inits = [], []
    renames = {}

    def qdq(name):
        e = pot_exponent(ranges[name], 127)
        s, z = name + "_scale", name + "_zp"
        new_inits.append(numpy_helper.from_array(np.array(2.0 ** -e, np.float32), s))
        new_inits.append(numpy_helper.from_array(np.array(0, np.int8), z))
        q, dq = name + "_q", name + "_dq"
        new_nodes.append(helper.make_node("QuantizeLinear", [name, s, z], [q], name=q))
        new_nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq], name=dq))
        renames[name] = dq

    qdq(points[0])
    for n in g.node:
        x_exp = None
        for i, name in enumerate(n.input):
            if name in renames:
                if i == 0:
                    x_exp = pot_exponent(ranges[name], 127)
                n.input[i] = renames[name]
        if n.op_type in ("Conv", "Gemm"):
            w = numpy_helper.to_array(inits[n.input[1]])
            # Gemm (transB=1) weights are [N, K]: per output row as well.
            flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            e = np.array([pot_exponent(v, 7) for v in flat])
            scale = (2.0 ** -e).astype(np.float32)
            shape = (-1,) + (1,) * (w.ndim - 1)
            codes = np.clip(np.round(w / scale.reshape(shape)), -8, 7).astype(np.int8)
            packed = codes.reshape(-1)
            if packed.size % 2:
                packed = np.append(packed, 0)
            raw = ((packed[0::2] & 0xF) | ((packed[1::2] & 0xF) << 4)).astype(np.uint8).tobytes()
            wq = n.input[1] + "_int4"
            t = helper.make_tensor(wq, TensorProto.INT4, list(w.shape), raw, raw=True)
            new_inits.append(t)
            new_inits.append(numpy_helper.from_array(scale, wq + "_scale"))
            zp = helper.make_tensor(wq + "_zp", TensorProto.INT4, [len(scale)], bytes((len(scale) + 1) // 2), raw=True)
            new_inits.append(zp)
            new_nodes.append(
                helper.make_node("DequantizeLinear", [wq, wq + "_scale", wq + "_zp"], [wq + "_dq"], name=wq + "_dq", axis=0)
            )
            n.input[1] = wq + "_dq"
            # The bias as int32 on the accumulator's grid (scale s_x · s_w), as QDQ
            # exporters store it.
            if len(n.input) > 2 and x_exp is not None:
                b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
                bias_scale = (2.0 ** -(x_exp + e)).astype(np.float32)
                bq_name = n.input[2] + "_int32"
                bq = np.round(b / bias_scale).astype(np.int32)
                new_inits.append(numpy_helper.from_array(bq, bq_name))
                new_inits.append(numpy_helper.from_array(bias_scale, bq_name + "_scale"))
                new_inits.append(numpy_helper.from_array(np.zeros(len(bq), np.int32), bq_name + "_zp"))
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear", [bq_name, bq_name + "_scale", bq_name + "_zp"], [bq_name + "_dq"], name=bq_name + "_dq", axis=0
                    )
                )
                n.input[2] = bq_name + "_dq"
        new_nodes.append(n)
        if n.output[0] in ranges and n.output[0] != points[0]:
            qdq(n.output[0])
    # Graph outputs keep their names: the last node's output is the model output (no QDQ).
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    m.opset_import[0].version = max(m.opset_import[0].version, 21)
    onnx.checker.check_model(m)
    return m


def run(model_bytes, x, optimize=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def main():
    os.makedirs(OUT, exist_ok=True)
    calib = fashion("train", 64)
    test = fashion("test", 64)
    folded = fold_bn(onnx.load(FLOAT))
    folded_path = os.path.join(OUT, "_folded.onnx")
    onnx.save(folded, folded_path)
    ort_path = os.path.join(OUT, "fashion_resnet8_ort_qdq.onnx")
    quantize_static(
        folded_path,
        ort_path,
        Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    sym_path = os.path.join(OUT, "fashion_resnet8_ort_qdq_sym.onnx")
    quantize_static(
        folded_path,
        sym_path,
        Reader(calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        # Not the global pool, the Flatten and the classifier: the pool's 1/49 must stay foldable
        # into the classifier, which a pair between them prevents.
        nodes_to_exclude=["/pool/GlobalAveragePool", "/Flatten", "/fc/Gemm"],
    )
    os.remove(folded_path)
    pot = pot_int4_model(None, calib)
    pot_path = os.path.join(OUT, "fashion_resnet8_pot_int4.onnx")
    onnx.save(pot, pot_path)
    np.save(os.path.join(OUT, "fashion_resnet8_qdq_inputs.npy"), test)
    for path, out in [
        (ort_path, "fashion_resnet8_ort_qdq_logits.npy"),
        (pot_path, "fashion_resnet8_pot_int4_logits.npy"),
    ]:
        with open(path, "rb") as f:
            model_bytes = f.read()
        for optimize, name in [(True, out), (False, out.replace("_logits", "_reference_logits"))]:
            logits = run(model_bytes, test, optimize)
            np.save(os.path.join(OUT, name), logits.astype(np.float32))
            print(name, logits.shape)


if __name__ == "__main__":
    main()
