"""Builds model.onnx: a small graph with four things lutq does not support, to show that
`lutq inspect` / `lutq run` report all of them at once. Needs PyPI `onnx` (1.22.0 used).

    python3 examples/unsupported/make_model.py
"""
import os

import onnx
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 32])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
nodes = [
    helper.make_node("Resize", ["x", "", "scales"], ["r"], name="up0", mode="cubic"),
    helper.make_node("Pad", ["r", "pads"], ["p"], name="pad_reflect", mode="reflect"),
    helper.make_node("LSTM", ["p"], ["y"], name="lstm"),
]
graph = helper.make_graph(
    nodes,
    "unsupported",
    [x],
    [y],
    initializer=[
        helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2]),
        helper.make_tensor("pads", TensorProto.INT64, [8], [0] * 8),
    ],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lutq-example")
onnx.save(model, os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.onnx"))
