#!/usr/bin/env python3
"""Quantization-aware fine-tuning of a bundled Fashion-MNIST net, exported as a QDQ ONNX
model that lutq compiles exactly as trained (power-of-two scales, LUT-4 weights).

The fake quantization mirrors lutq's numeric contract (docs/quantization.md):

  * BatchNorm is folded into the convolutions before fine-tuning (inference statistics,
    the same fold `scripts/make_qdq_models.py` and lutq-opt apply), so the trained weights
    are the folded ones the integer program holds.
  * Weights: 4-bit codes into a 16-entry table of int8 values, scaled by a power of two:
    w = LUT[code] * 2^-f. `--mode lut4-pot-layer`: one table and one exponent per layer;
    `--mode lut4-pot-channel`: one table and one exponent per output channel. f is the
    largest exponent whose int8 range holds the group's largest |w| (`--weight-exponents
    max`), or with `--weight-exponents search` that plus a per-layer shift (clipping the
    largest weights) chosen once before fine-tuning, in network order, by the least
    squared error of the layer's activated output on the calibration images
    (`--weight-exponents search-epochs`: searched again after every epoch while the tables
    still refit, on the weights as they have moved; the activation exponents stay); the table is fitted
    by 1-D k-means (Lloyd, quantile start) on w * 2^f and rounded to integers, refitted
    every `--refit-every` steps and frozen for the last `--freeze` fraction of the steps.
    The float (latent) weights learn through a straight-through estimator.
    `--lut-per-channel`: a table per output channel instead; `--lut-tables N`: up to N
    tables per layer, each shared by a group of output channels (rows clustered by their
    own tables, then rows and tables refitted alternately at every refit; lutq's
    `--lut-tables N`). Both export a table per channel (≤ 16 values per row); lutq stores
    each distinct table once.
  * Biases: int32 on the accumulator's grid, 2^-(f_x + f), rounded half to even.
  * Activations: 8 bit with a power-of-two scale 2^-e, exactly QuantizeLinear followed by
    DequantizeLinear (x * 2^e rounded half to even, saturated): u8 (0..255, zero point 0)
    after Relu / ReLU6, i8 elsewhere, at every tensor the integer program holds (the input,
    Relu / Clip / Add outputs, Conv outputs that no activation reads). Exponents are chosen
    once before fine-tuning, in network order on the quantized network upstream, by least
    squared error on `--calib` training images, then frozen. Straight-through estimator
    inside the clamp range, zero gradient outside it.
  * The global average pool becomes a global sum (`--pool sum`, the default; exported as
    ReduceSum) with an 8-bit pair like any other tensor, and its 1/N moves into the next
    layer's float weights before fine-tuning: exactly lutq's sum-pool (i32 sum, rounding
    shift), so the classifier reads the very integers it was trained on. (`--pool avg`
    keeps a float GlobalAveragePool, which lutq then quantizes by calibration: about
    40 dB from onnxruntime's execution instead of bit-exactness.) The classifier's
    output is not quantized: lutq emits its i32 accumulator.

Training: AdamW on the latent weights and the biases, cosine learning-rate decay to 0 over
all steps, the augmentation of `scripts/train_fashion.py` (random 2-pixel crop, horizontal
flip), label smoothing 0.1. The last `--val` training images (5 000 by default) are held
out: they never train the net, and the validation top-1 on them after each epoch is what
a recipe is chosen by; the test set is read once, after training, for the exported file.
(The bundled fp32 nets were trained on all 60 000 training images, so the validation
images are not unseen by the fp32 teacher, only by the fine-tuning: compare QAT recipes
with each other on them, not with fp32.)

Distillation (`--kd-weight a`, `--temperature T`): the loss is
(1 - a) * cross-entropy(labels) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
the teacher being the bundled fp32 net itself (BN folded, no quantization) on the same
augmented batch. `--kd-weight 0` is plain QAT on the labels.

Export (opset 21): weights as INT8 initializers (the table values of each code) through
DequantizeLinear (per tensor for one table per layer, per axis 0 otherwise), biases as
INT32, every activation point as QuantizeLinear -> DequantizeLinear (uint8 / int8, zero
point 0). The script checks onnxruntime's reference execution (ORT_DISABLE_ALL) of the
file against the torch model on the full test set.

Seeded, CPU only, one thread by default. Run from the repository root, e.g. (the
distilled recipe of docs/quantization.md; on a shared machine with `nice -n 10`)

  python scripts/qat_fashion.py resnet8 --mode lut4-pot-channel --epochs 4 --lr 5e-4 \\
      --kd-weight 0.5 --temperature 4 --out models/qdq/fashion_resnet8_qat_lut4_channel.onnx

It writes the model and, next to it, its run record (OUT.json). Then, for lutq's tests, onnxruntime's reference outputs of the file on the 64 test
images of models/qdq/fashion_resnet8_qdq_inputs.npy (next to the model, as
NAME_reference_logits.npy):

  python scripts/qat_fashion.py reference models/qdq/fashion_resnet8_qat_lut4_layer.onnx
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
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_qdq_models import fold_bn  # noqa: E402
from train_fashion import augment, load_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ACTIVATIONS = ("Relu", "Clip")


# ---------------------------------------------------------------------------------------------
# Fake quantization


class RoundSTE(torch.autograd.Function):
    """Round half to even forward (torch.round), identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def fake_quant_act(x: torch.Tensor, e: int, lo: int, hi: int) -> torch.Tensor:
    """QuantizeLinear -> DequantizeLinear with scale 2^-e and zero point 0; STE inside
    [lo, hi] (x * 2^e is exact for a power of two)."""
    s = float(2.0**e)
    return torch.clamp(RoundSTE.apply(x * s), lo, hi) / s


def best_act_exponent(x: torch.Tensor, lo: int, hi: int) -> int:
    """The exponent with the least squared fake-quantization error on `x`."""
    m = float(x.abs().max())
    if m == 0.0:
        return 0
    top = int(np.floor(np.log2(max(abs(lo), hi) / m)))
    best, best_err = top, None
    for e in range(top - 1, top + 6):
        err = float(((fake_quant_act(x, e, lo, hi) - x) ** 2).sum())
        if best_err is None or err < best_err:
            best, best_err = e, err
    return best


def pot_exponents(w: torch.Tensor) -> torch.Tensor:
    """Per group (rows of `w`): the largest f with max|w| * 2^f <= 127."""
    m = w.abs().amax(dim=1).clamp_min(1e-30)
    return torch.floor(torch.log2(127.0 / m)).clamp(-32, 32)


def kmeans_lut(v: torch.Tensor, iters: int = 15) -> torch.Tensor:
    """16 integer levels per row of `v` (rows = groups, values already scaled by 2^f), by
    Lloyd's algorithm from the quantiles, rounded and clamped to int8."""
    q = torch.linspace(0.0, 1.0, 16, dtype=v.dtype)
    levels = torch.quantile(v, q, dim=1).T.contiguous()  # [G, 16]
    for _ in range(iters):
        codes = (v[:, :, None] - levels[:, None, :]).abs().argmin(dim=2)
        sums = torch.zeros_like(levels).scatter_add_(1, codes, v)
        counts = torch.zeros_like(levels).scatter_add_(1, codes, torch.ones_like(v))
        levels = torch.where(counts > 0, sums / counts.clamp_min(1), levels)
    return torch.clamp(torch.round(levels), -128, 127)


def row_error(scaled: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """[rows, tables]: the squared error of each row of `scaled` rounded to its nearest
    level of each table of `luts` ([tables, 16])."""
    d = (scaled[:, None, :, None] - luts[None, :, None, :]).abs().amin(dim=3)
    return (d * d).sum(dim=2)


def grouped_luts(scaled: torch.Tensor, tables: int, iters: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `tables` tables shared by groups of rows (lutq's `--lut-tables N`): rows are
    clustered by their own tables (k-means on the 16 levels, from rows spread over the
    order of their largest level), then alternately each group's table is refitted to its
    rows and every row moves to the table that rounds it best. Returns the tables
    [G, 16] and each row's table index [rows]."""
    rows = scaled.shape[0]
    own = kmeans_lut(scaled)  # [rows, 16]
    if rows <= tables:
        return own, torch.arange(rows)
    order = torch.argsort(own.abs().amax(dim=1))
    centers = own[order[torch.linspace(0, rows - 1, tables).round().long()]].clone()
    for _ in range(10):
        group = torch.cdist(own, centers).argmin(dim=1)
        for g in range(tables):
            if (group == g).any():
                centers[g] = own[group == g].mean(dim=0)
    luts = centers
    for _ in range(iters):
        kept = [g for g in range(tables) if (group == g).any()]
        luts = torch.stack([kmeans_lut(scaled[group == g].reshape(1, -1))[0] for g in kept])
        group = row_error(scaled, luts).argmin(dim=1)
    kept = [g for g in range(luts.shape[0]) if (group == g).any()]
    luts = luts[kept]
    group = row_error(scaled, luts).argmin(dim=1)
    return luts, group


class LutWeight(nn.Module):
    """A trainable float weight seen through its LUT-4 power-of-two quantizer: per row
    (output channel) `w = LUT[code] * 2^-f[row]`, one exponent per layer or per row; one
    table per layer (`tables` 1), per row (0), or up to `tables` shared by groups of rows."""

    def __init__(self, w: np.ndarray, pot_channel: bool, tables: int):
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(w.copy()))
        self.pot_channel = pot_channel
        self.tables = tables
        # Added to every exponent of the layer: 0 keeps the largest weight in the int8
        # range; larger values clip it for finer steps (`--weight-exponents search`).
        self.shift = 0
        self.refit()

    def rows(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(w.shape[0], -1)

    @torch.no_grad()
    def refit(self) -> None:
        r = self.rows(self.weight.detach())
        f = pot_exponents(r) if self.pot_channel else pot_exponents(r.reshape(1, -1)).expand(r.shape[0])
        self.f = (f + self.shift).clamp(-32, 32)  # [rows]
        scaled = r * torch.pow(2.0, self.f)[:, None]
        if self.tables == 0:
            self.lut = kmeans_lut(scaled)  # [rows, 16]
        elif self.tables == 1:
            self.lut = kmeans_lut(scaled.reshape(1, -1))  # [1, 16]
        else:
            luts, group = grouped_luts(scaled, self.tables)
            self.lut = luts[group]  # [rows, 16], rows of a group share one table

    def int_values(self) -> torch.Tensor:
        """The int8 weight values (the table entry of each weight's code), in the weight's
        shape."""
        w = self.weight.detach()
        scaled = self.rows(w) * torch.pow(2.0, self.f)[:, None]
        lut = self.lut.expand(scaled.shape[0], 16)
        codes = (scaled[:, :, None] - lut[:, None, :]).abs().argmin(dim=2)
        return torch.gather(lut, 1, codes).reshape(w.shape)

    def scales(self) -> torch.Tensor:
        """2^-f per row."""
        return torch.pow(2.0, -self.f)

    def forward(self) -> torch.Tensor:
        w = self.weight
        wq = self.int_values() * self.scales().reshape((-1,) + (1,) * (w.dim() - 1))
        return w + (wq - w).detach()


# ---------------------------------------------------------------------------------------------
# The folded ONNX graph as a torch module


class QatNet(nn.Module):
    """Runs the BN-folded ONNX graph (Conv, Gemm, Relu, Clip, Add, GlobalAveragePool,
    Flatten) with fake quantization at the points an integer program holds."""

    def grid(self, name: str) -> int | None:
        """The exponent of the tensor `name` (through Flatten), if it is quantized."""
        name = self.flatten_src.get(name, name)
        return self.exps.get(name)

    def __init__(
        self, model: onnx.ModelProto, pot_channel: bool, tables: int, sum_pool: bool = True, quantize: bool = True
    ):
        super().__init__()
        g = model.graph
        self.sum_pool = sum_pool
        self.quantize = quantize
        self.choosing_weights = False
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        consts = {}
        for n in g.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.nodes = [n for n in g.node if n.op_type != "Constant"]
        self.input = g.input[0].name
        self.output = g.output[0].name
        self.consts = {**inits, **consts}
        self.weights = nn.ModuleDict()
        self.biases = nn.ParameterDict()
        readers: dict[str, list[str]] = {}
        for n in self.nodes:
            for i in n.input:
                readers.setdefault(i, []).append(n.op_type)
        # Activation points: name -> (lo, hi); exponents filled by calibrate().
        self.points: dict[str, tuple[int, int]] = {self.input: (-128, 127)}
        for n in self.nodes:
            out = n.output[0]
            if out == self.output:
                pass
            elif n.op_type in ACTIVATIONS:
                self.points[out] = (0, 255)
            elif n.op_type == "Add" or (n.op_type == "Conv" and not set(readers.get(out, [])) & set(ACTIVATIONS)):
                self.points[out] = (-128, 127)
            elif n.op_type == "GlobalAveragePool" and sum_pool:
                self.points[out] = self.points.get(n.input[0], (-128, 127))
            if n.op_type in ("Conv", "Gemm"):
                key = self.key(n)
                self.weights[key] = LutWeight(inits[n.input[1]], pot_channel, tables)
                b = inits[n.input[2]] if len(n.input) > 2 else np.zeros(inits[n.input[1]].shape[0], np.float32)
                self.biases[key] = nn.Parameter(torch.from_numpy(b.copy()))
        self.exps: dict[str, int | None] = {p: None for p in self.points}
        self.flatten_src = {n.output[0]: n.input[0] for n in self.nodes if n.op_type == "Flatten"}
        if sum_pool:
            self.pools_to_sums(model)

    def pools_to_sums(self, model: onnx.ModelProto) -> None:
        """Each global average pool becomes a global sum (on the input's grid, quantized
        to 8 bits like any other tensor) and the layer after it (through Flatten) takes
        the 1/N into its float weights, as lutq does: the pooled value then has a
        power-of-two grid that the integer program reproduces exactly."""
        shapes = {
            v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in onnx.shape_inference.infer_shapes(model).graph.value_info
        }
        for n in self.nodes:
            if n.op_type != "GlobalAveragePool":
                continue
            dims = shapes[n.input[0]]
            count = dims[2] * dims[3]
            name = n.output[0]
            while True:
                users = [u for u in self.nodes if name in u.input]
                assert len(users) == 1, f"{n.name}: one reader expected"
                if users[0].op_type in ("Gemm", "Conv"):
                    break
                assert users[0].op_type == "Flatten", users[0].op_type
                name = users[0].output[0]
            lw = self.weights[self.key(users[0])]
            with torch.no_grad():
                lw.weight /= count
            lw.refit()

    @staticmethod
    def key(n) -> str:
        return n.name.replace(".", "_").replace("/", "_") or n.output[0].replace(".", "_")

    def attr(self, n, name, default):
        for a in n.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def q(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if not self.quantize or name not in self.points:
            return x
        lo, hi = self.points[name]
        if self.exps[name] is None:
            self.exps[name] = best_act_exponent(x.detach(), lo, hi)
        return fake_quant_act(x, self.exps[name], lo, hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input: self.q(self.input, x)}
        for n in self.nodes:
            ins = [env[i] if i in env else None for i in n.input]
            t = n.op_type
            if t in ("Conv", "Gemm"):
                if self.choosing_weights:
                    self.choose_weight_shift(n, ins[0])
                y = self.linear(n, ins[0], self.quantize)
            elif t == "Relu":
                y = F.relu(ins[0])
            elif t == "Clip":
                lo = float(self.consts[n.input[1]]) if len(n.input) > 1 and n.input[1] else None
                hi = float(self.consts[n.input[2]]) if len(n.input) > 2 and n.input[2] else None
                y = torch.clamp(ins[0], lo, hi)
            elif t == "Add":
                y = ins[0] + ins[1]
            elif t == "GlobalAveragePool":
                y = ins[0].sum(dim=(2, 3), keepdim=True) if self.sum_pool else ins[0].mean(dim=(2, 3), keepdim=True)
            elif t == "Flatten":
                y = torch.flatten(ins[0], 1)
            else:
                raise ValueError(f"node {n.name} ({t}): not supported by the QAT runner")
            env[n.output[0]] = self.q(n.output[0], y)
        return env[self.output]

    def linear(self, n, x: torch.Tensor, quantized: bool) -> torch.Tensor:
        """The Conv or Gemm node `n` on `x`, with fake-quantized weights and bias or float ones."""
        key = self.key(n)
        w = self.weights[key]() if quantized else self.weights[key].weight
        b = self.biases[key]
        xe = self.grid(n.input[0]) if quantized else None
        if xe is not None:
            bs = torch.pow(2.0, -(xe + self.weights[key].f)).expand(w.shape[0])
            b = b + (torch.clamp(RoundSTE.apply(b / bs), -(2**31), 2**31 - 1) * bs - b).detach()
        if n.op_type == "Conv":
            pads = self.attr(n, "pads", [0, 0, 0, 0])
            assert pads[0] == pads[2] and pads[1] == pads[3], pads
            return F.conv2d(
                x,
                w,
                b,
                stride=tuple(self.attr(n, "strides", [1, 1])),
                padding=(pads[0], pads[1]),
                groups=self.attr(n, "group", 1),
            )
        assert self.attr(n, "transB", 0) == 1 and self.attr(n, "transA", 0) == 0
        return F.linear(x, w, b)

    def output_range(self, n) -> tuple[float | None, float | None]:
        """The clamp that the activation reading `n`'s output applies (Relu, Clip), if it
        is the only reader: errors beyond it do not reach the next layer."""
        users = [u for u in self.nodes if n.output[0] in u.input]
        if len(users) != 1 or users[0].op_type not in ACTIVATIONS:
            return None, None
        u = users[0]
        if u.op_type == "Relu":
            return 0.0, None
        lo = float(self.consts[u.input[1]]) if len(u.input) > 1 and u.input[1] else None
        hi = float(self.consts[u.input[2]]) if len(u.input) > 2 and u.input[2] else None
        return lo, hi

    def choose_weight_shift(self, n, x: torch.Tensor) -> None:
        """`--weight-exponents search`: the layer's exponent shift (0: the largest weight
        fits the int8 range; each step up halves the step and clips more) with the least
        squared error of the layer's activated output against its float weights' on the
        same (quantized upstream) input. One exponent per layer must serve rows whose
        ranges differ a hundredfold in BN-folded depthwise layers, where the largest rows
        often only saturate their clamp: keeping them whole zeroes the small rows."""
        lw = self.weights[self.key(n)]
        lo, hi = self.output_range(n)

        def act(y: torch.Tensor) -> torch.Tensor:
            return y if lo is None and hi is None else torch.clamp(y, lo, hi)

        ref = act(self.linear(n, x, False))
        best, best_err = 0, None
        for shift in range(0, 8):
            lw.shift = shift
            lw.refit()
            err = float(((act(self.linear(n, x, True)) - ref) ** 2).sum())
            if best_err is None or err < best_err:
                best, best_err = shift, err
        lw.shift = best
        lw.refit()

    @torch.no_grad()
    def research_weights(self, x: torch.Tensor) -> dict[str, int]:
        """Chooses every layer's exponent shift again (`--weight-exponents search-epochs`),
        in network order on the quantized network upstream, keeping the activation
        exponents; returns the shifts."""
        self.eval()
        self.choosing_weights = True
        try:
            self(x)
        finally:
            self.choosing_weights = False
        return {k: w.shift for k, w in self.weights.items()}

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, weight_search: bool = False) -> None:
        """Chooses the activation exponents (and with `weight_search` the weights'
        exponent shifts) in network order, each on the quantized network upstream."""
        self.exps = {p: None for p in self.points}
        self.eval()
        self.choosing_weights = weight_search
        try:
            self(x)
        finally:
            self.choosing_weights = False


# ---------------------------------------------------------------------------------------------
# Export


def export_qdq(net: QatNet, model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    new_nodes, new_inits, renames = [], [], {}

    def qdq(name: str) -> None:
        e = net.exps[name]
        lo, hi = net.points[name]
        s, z = name + "_scale", name + "_zp"
        new_inits.append(numpy_helper.from_array(np.array(2.0**-e, np.float32), s))
        new_inits.append(numpy_helper.from_array(np.array(0, np.uint8 if lo == 0 else np.int8), z))
        q, dq = name + "_q", name + "_dq"
        new_nodes.append(helper.make_node("QuantizeLinear", [name, s, z], [q], name=q))
        new_nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq], name=dq))
        renames[name] = dq

    qdq(net.input)
    for n in g.node:
        if n.op_type == "Constant":
            new_nodes.append(n)
            continue
        x_name = n.input[0]
        for i, name in enumerate(n.input):
            if name in renames:
                n.input[i] = renames[name]
        if n.op_type == "GlobalAveragePool" and net.sum_pool:
            axes = n.name + "_axes"
            new_inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
            n.op_type = "ReduceSum"
            n.input.append(axes)
            n.attribute.append(helper.make_attribute("keepdims", 1))
        if n.op_type in ("Conv", "Gemm"):
            key = net.key(n)
            lw = net.weights[key]
            vals = lw.int_values().numpy().astype(np.int8)
            wq = n.input[1] + "_lut4"
            new_inits.append(numpy_helper.from_array(vals, wq))
            scales = lw.scales().numpy().astype(np.float32)
            if lw.pot_channel:
                new_inits.append(numpy_helper.from_array(scales, wq + "_scale"))
                new_inits.append(numpy_helper.from_array(np.zeros(len(scales), np.int8), wq + "_zp"))
                dq = helper.make_node("DequantizeLinear", [wq, wq + "_scale", wq + "_zp"], [wq + "_dq"], name=wq + "_dq", axis=0)
            else:
                new_inits.append(numpy_helper.from_array(np.array(scales[0], np.float32), wq + "_scale"))
                new_inits.append(numpy_helper.from_array(np.array(0, np.int8), wq + "_zp"))
                dq = helper.make_node("DequantizeLinear", [wq, wq + "_scale", wq + "_zp"], [wq + "_dq"], name=wq + "_dq")
            new_nodes.append(dq)
            n.input[1] = wq + "_dq"
            b = net.biases[key].detach().numpy().astype(np.float64)
            xe = net.grid(x_name)
            bname = (n.input[2] if len(n.input) > 2 else key + "_bias") + "_qat"
            if xe is not None:
                bias_scale = (2.0 ** -(xe + lw.f.numpy().astype(np.float64))).astype(np.float32)
                bias_scale = np.broadcast_to(bias_scale, b.shape).copy()
                bq = np.clip(np.round(b / bias_scale), -(2**31), 2**31 - 1).astype(np.int32)
                new_inits.append(numpy_helper.from_array(bq, bname + "_int32"))
                new_inits.append(numpy_helper.from_array(bias_scale, bname + "_scale"))
                new_inits.append(numpy_helper.from_array(np.zeros(len(bq), np.int32), bname + "_zp"))
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [bname + "_int32", bname + "_scale", bname + "_zp"],
                        [bname + "_dq"],
                        name=bname + "_dq",
                        axis=0,
                    )
                )
                bname = bname + "_dq"
            else:
                new_inits.append(numpy_helper.from_array(b.astype(np.float32), bname))
            if len(n.input) > 2:
                n.input[2] = bname
            else:
                n.input.append(bname)
        new_nodes.append(n)
        if n.output[0] in net.points:
            qdq(n.output[0])
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    m.opset_import[0].version = 21
    m.producer_name = "lutq scripts/qat_fashion.py"
    onnx.checker.check_model(m, full_check=True)
    return m


def ort_logits(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 500]})[0] for i in range(0, len(x), 500)])


def optimizer_step(net: QatNet, opt, sched, loss: torch.Tensor, step: int, freeze_at: int, refit_every: int) -> int:
    """One optimizer and schedule step on `loss`; every `refit_every` steps until
    `freeze_at` the tables are refitted to the moved weights. Returns the step count."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    step += 1
    if step < freeze_at and step % refit_every == 0:
        for w in net.weights.values():
            w.refit()
    return step


@torch.no_grad()
def logits_of(net: nn.Module, x: torch.Tensor, bs: int = 500) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i : i + bs]) for i in range(0, len(x), bs)])


# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU model (/proc/cpuinfo), for the run's wall time."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def write_reference_logits(model: Path) -> None:
    """onnxruntime's reference execution of `model` on the committed QDQ test inputs."""
    x = np.load(ROOT / "models" / "qdq" / "fashion_resnet8_qdq_inputs.npy")
    logits = ort_logits(model.read_bytes(), x).astype(np.float32)
    out = model.with_name(model.stem + "_reference_logits.npy")
    np.save(out, logits)
    print(f"{out}: {logits.shape}, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "reference":
        write_reference_logits(Path(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["resnet8", "mobilenetv2"], help="bundled net models/fashion_MODEL.onnx")
    ap.add_argument("--mode", choices=["lut4-pot-layer", "lut4-pot-channel"], required=True)
    ap.add_argument("--lut-per-channel", action="store_true", help="one table per output channel (lutq's --lut-per-channel)")
    ap.add_argument(
        "--lut-tables",
        type=int,
        default=1,
        help="up to N tables per layer shared by groups of output channels (lutq's --lut-tables N; the export has a table per channel, "
        "lutq stores each distinct one once)",
    )
    ap.add_argument(
        "--pool",
        choices=["sum", "avg"],
        default="sum",
        help="sum: global pools become ReduceSum with a QDQ pair, the 1/N in the next layer (exact in lutq); avg: GlobalAveragePool left in float",
    )
    ap.add_argument(
        "--weight-exponents",
        choices=["max", "search", "search-epochs"],
        default="max",
        help="max: each exponent keeps its group's largest |w| in the int8 range; search: per layer, that exponent plus the "
        "shift 0..7 with the least activated-output error on the calibration images (clips outlier rows; what "
        "one exponent per layer needs on BN-folded depthwise layers); search-epochs: search, then again after every "
        "epoch while the tables still refit (the activation exponents stay)",
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4, help="AdamW peak learning rate (cosine decay)")
    ap.add_argument("--calib", type=int, default=512, help="training images that choose the activation exponents")
    ap.add_argument("--refit-every", type=int, default=50, help="steps between LUT refits")
    ap.add_argument("--freeze", type=float, default=0.25, help="fraction of the last steps with frozen LUTs")
    ap.add_argument(
        "--val",
        type=int,
        default=5000,
        help="the last VAL training images are held out for validation (recipe choice); 0: train on all 60 000",
    )
    ap.add_argument(
        "--kd-weight",
        type=float,
        default=0.0,
        help="distillation from the fp32 net: weight a of the KL term, (1-a) on the labels' cross-entropy; 0 = no teacher",
    )
    ap.add_argument("--temperature", type=float, default=4.0, help="distillation temperature T (softened logits; the KL is scaled by T^2)")
    ap.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy term")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    log(f"args: {vars(args)}; torch {torch.__version__}, onnx {onnx.__version__}")
    src = ROOT / "models" / f"fashion_{args.model}.onnx"
    folded = fold_bn(onnx.load(str(src)))
    pot_channel = args.mode == "lut4-pot-channel"
    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    if not 0 <= args.val < len(xtr):
        ap.error(f"--val {args.val}: expected 0 to {len(xtr) - 1} held-out training images")
    if not 0.0 <= args.kd_weight <= 1.0 or args.temperature <= 0.0:
        ap.error("--kd-weight is a weight in [0, 1] and --temperature must be positive")
    cut = len(xtr) - args.val
    xva, yva = xtr[cut:], ytr[cut:]
    xtr, ytr = xtr[:cut], ytr[:cut]

    def top1(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((logits_of(net, x).argmax(1) == y).float().mean()) if len(x) else float("nan")

    if args.lut_tables < 1:
        ap.error("--lut-tables must be at least 1")
    if args.lut_per_channel and args.lut_tables > 1:
        ap.error("--lut-per-channel and --lut-tables N > 1 are two different table layouts: pick one")
    tables = 0 if args.lut_per_channel else args.lut_tables
    fp32 = QatNet(folded, pot_channel, tables, sum_pool=False, quantize=False)
    fp32.requires_grad_(False)
    fp32_val = top1(fp32, xva, yva)
    log(f"fp32 (BN folded) validation top-1 {fp32_val:.4f} (images the fp32 net was trained on)")

    net = QatNet(folded, pot_channel, tables, sum_pool=args.pool == "sum")
    gen = torch.Generator().manual_seed(args.seed)
    calib = xtr[torch.randperm(len(xtr), generator=gen)[: args.calib]]
    net.calibrate(calib, weight_search=args.weight_exponents != "max")
    val0 = top1(net, xva, yva)
    log(f"fake-quantized before fine-tuning: validation top-1 {val0:.4f}; exponents {net.exps}")

    steps_per_epoch = (len(xtr) + args.batch - 1) // args.batch
    total = args.epochs * steps_per_epoch
    freeze_at = int(total * (1.0 - args.freeze))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    crit = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    temp = args.temperature

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = net(x)
        loss = crit(s, y)
        if args.kd_weight == 0.0:
            return loss
        with torch.no_grad():
            t = fp32(x)
        kl = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), log_target=True, reduction="batchmean")
        return (1.0 - args.kd_weight) * loss + args.kd_weight * temp * temp * kl

    val_per_epoch = []
    step = 0
    for ep in range(args.epochs):
        te = time.time()
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for i in range(steps_per_epoch):
            b = perm[i * args.batch : (i + 1) * args.batch]
            loss = loss_of(augment(xtr[b], gen), ytr[b])
            step = optimizer_step(net, opt, sched, loss, step, freeze_at, args.refit_every)
            tot += float(loss.detach())
            if (i + 1) % 100 == 0:
                log(f"epoch {ep + 1} step {i + 1}/{steps_per_epoch} loss {tot / (i + 1):.4f}")
        val = top1(net, xva, yva)
        val_per_epoch.append(round(val, 4))
        log(f"epoch {ep + 1}/{args.epochs} loss {tot / steps_per_epoch:.4f} validation top-1 {val:.4f} ({time.time() - te:.0f}s)")
        if args.weight_exponents == "search-epochs" and step < freeze_at:
            before = {k: w.shift for k, w in net.weights.items()}
            after = net.research_weights(calib)
            moved = {k: (before[k], v) for k, v in after.items() if v != before[k]}
            log(f"weight exponent shifts searched again: {len(moved)} of {len(after)} layers moved {moved}")

    fp32_acc = top1(fp32, xte, yte)
    qat = logits_of(net, xte)
    qat_acc = float((qat.argmax(1) == yte).float().mean())
    m = export_qdq(net, folded)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(args.out))
    data = args.out.read_bytes()
    ref = ort_logits(data, xte.numpy())
    ort_acc = float((ref.argmax(1) == yte.numpy()).mean())
    agree = float((ref.argmax(1) == qat.numpy().argmax(1)).mean())
    err = qat.numpy().astype(np.float64) - ref
    sqnr = 10 * np.log10((ref.astype(np.float64) ** 2).sum() / max((err**2).sum(), 1e-30))
    def finite(x: float) -> float | None:
        """JSON has no NaN: a validation top-1 without validation images (`--val 0`) is null."""
        return None if x != x else x

    info = {
        "file": str(args.out),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fp32_val_top1": finite(fp32_val),
        "fake_quant_val_top1_before": finite(val0),
        "val_top1_per_epoch": [finite(v) for v in val_per_epoch],
        "fp32_top1": fp32_acc,
        "qat_torch_top1": qat_acc,
        "onnxruntime_reference_top1": ort_acc,
        "torch_vs_onnxruntime_agreement": agree,
        "torch_vs_onnxruntime_sqnr_db": float(sqnr),
        "wall_s": round(time.time() - t0),
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "numpy": np.__version__,
        },
        "cpu": cpu_name(),
    }
    log(json.dumps(info, indent=1))
    # The run's record next to the model (models/qdq/qat_runs/ keeps those of the runs that
    # `cargo xtask qat-table` lists).
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return 0 if agree >= 0.995 else 1


if __name__ == "__main__":
    sys.exit(main())
