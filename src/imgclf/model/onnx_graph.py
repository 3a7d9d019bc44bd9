"""An ONNX model's layers and intermediate tensors, as INT8 refinement reads them.

Layers (Conv, Gemm) are matched between an FP32 model and its INT8 quantization by node name,
and a tensor inside the network is read by running a copy of the model whose outputs are the
tensors asked for (model/rounding.py, model/bias_correction.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

LAYERS = ("Conv", "Gemm")
BATCH = 8


def layers_by_name(model: Any) -> dict[str, Any]:
    """The Conv and Gemm nodes of ``model`` (an onnx ModelProto) by name, in graph order;
    ValueError when a name is empty or taken twice, or a weight or bias is shared, since layers
    are matched across models by name and rewritten one at a time."""
    layers = [node for node in model.graph.node if node.op_type in LAYERS]
    names = [node.name for node in layers]
    if "" in names or len(set(names)) != len(names):
        raise ValueError("every Conv and Gemm node needs a name of its own")
    parameters = [name for node in layers for name in node.input[1:]]
    if len(set(parameters)) != len(parameters):
        raise ValueError("a weight or bias is shared by two layers")
    return dict(zip(names, layers, strict=True))


def tensors_by_batch(
    model: Any, tensors: list[str], inputs: np.ndarray, batch: int = BATCH
) -> Iterator[dict[str, np.ndarray]]:
    """The named tensors of ``model`` (an onnx ModelProto, left as it is) for each batch of
    ``inputs`` in turn: one run of a copy whose outputs are those tensors."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in tensors:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for start in range(0, len(inputs), batch):
        outputs = session.run(None, {input_name: inputs[start : start + batch]})
        yield dict(zip(tensors, outputs, strict=True))
