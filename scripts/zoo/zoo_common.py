"""Shared helpers of the model-zoo scripts (paths, hashes, ONNX facts, onnxruntime runs)."""
from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
MODELS = ROOT / "models" / "zoo"
DATA = ROOT / "data" / "zoo"
# Committed files must stay below these sizes (bytes).
MAX_ONNX = 3 * 1024 * 1024
MAX_NPY = 2 * 1024 * 1024


def sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def check_sha(path: Path | str, expected: str) -> None:
    got = sha256(path)
    if got != expected:
        raise SystemExit(f"sha256 mismatch for {path}:\n  got      {got}\n  expected {expected}")


def rel(path: Path | str) -> str:
    """Repository-relative path with forward slashes."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def save_npy(path: Path, arr: np.ndarray, *, limit: int | None = None) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr)
    np.save(path, arr, allow_pickle=False)
    size = path.stat().st_size
    if limit is not None and size > limit:
        raise SystemExit(f"{path}: {size} bytes is over the {limit}-byte limit for committed files")
    return {"path": rel(path), "shape": list(arr.shape), "dtype": str(arr.dtype), "bytes": size,
            "sha256": sha256(path)}


def onnx_facts(path: Path) -> dict:
    """Input/outputs, opset, op histogram, node count and initializer count of an ONNX file."""
    import onnx

    m = onnx.load(str(path))

    def dims(vi):
        return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                for d in vi.type.tensor_type.shape.dim]

    init_names = {t.name for t in m.graph.initializer}
    hist = collections.Counter(n.op_type for n in m.graph.node)
    return {
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
        "ir_version": m.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "inputs": [{"name": i.name, "dims": dims(i),
                    "elem_type": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type)}
                   for i in m.graph.input if i.name not in init_names],
        "outputs": [{"name": o.name, "dims": dims(o),
                     "elem_type": onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type)}
                    for o in m.graph.output],
        "nodes": len(m.graph.node),
        "initializers": len(m.graph.initializer),
        "weights": int(sum(int(np.prod(t.dims)) for t in m.graph.initializer)),
        "ops": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def check_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(path: Path, x: np.ndarray, *, batch: int = 1) -> list[np.ndarray]:
    """Run every sample of x (batched by `batch`); returns each output concatenated."""
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        r = sess.run(None, {name: x[i:i + batch]})
        outs.append(r)
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
