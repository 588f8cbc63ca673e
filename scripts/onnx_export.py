"""The one ONNX export call the project's models use.

TorchScript exporter (`dynamo=False`) with constant folding off, so every BatchNormalization
node is kept (lutq folds BN itself); opset 13; input "input" and output "logits" with a
dynamic batch dimension. See models/README.md.
"""
from __future__ import annotations

from pathlib import Path

import torch


def export_keep_bn(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        opset_version=13,
        dynamo=False,
        do_constant_folding=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
