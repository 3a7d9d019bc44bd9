"""Hessian-aware rounding of the real Lite0 INT8 model's weights.

Quantizes the packaged FP32 bundle on 12 crops of three photos (ONNX Runtime's own quantizer,
no torch needed), then re-rounds its weights against those crops.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_helpers import CALIBRATION_PHOTOS, HELD_OUT_PHOTOS, photo_views
from onnx import numpy_helper

from imgclf.model.bundle import ModelBundle
from imgclf.model.onnx_graph import tensors_by_batch
from imgclf.model.quantize import logits, quantize_int8
from imgclf.model.rounding import receptive_fields, round_weights, second_moments


def weight_steps(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's weights as stored (int8 steps) and their scales, by layer name."""
    model = onnx.load(str(path))
    producers = {output: node for node in model.graph.node for output in node.output}
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dequantize = producers[node.input[1]]
            found[node.name] = (values[dequantize.input[0]], values[dequantize.input[1]])
    return found


def output_errors(
    fp32: Path, int8_models: list[Path], inputs: np.ndarray
) -> list[dict[str, float]]:
    """For each INT8 model, each layer's eᵀHe summed over its output channels: the mean square
    error its rounded weights add to its output on ``inputs``, in units of its scales."""
    model = onnx.load(str(fp32))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    moments = second_moments(model, layers, weights, inputs)
    found = []
    for int8 in int8_models:
        stored = weight_steps(int8)
        errors = {}
        for layer in layers:
            steps, scales = stored[layer.name]
            exact = weights[layer.input[1]].reshape(len(scales), -1) / scales.reshape(-1, 1)
            e = steps.reshape(len(scales), -1) - exact
            hessian = moments[layer.name]  # one for all channels, or one per channel
            he = e @ hessian[0] if len(hessian) == 1 else np.einsum("cij,cj->ci", hessian, e)
            errors[layer.name] = float(np.sum(he * e))
        found.append(errors)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 7])
def test_rounding_lowers_each_layers_output_error(
    model_dir: Path, bundle: ModelBundle, tmp_path: Path, bits: int
) -> None:
    fp32 = model_dir / "model.onnx"
    inputs = photo_views(CALIBRATION_PHOTOS, bundle, seed=0)
    nearest, rounded = tmp_path / "nearest.onnx", tmp_path / "rounded.onnx"
    quantize_int8(fp32, nearest, inputs, weight_bits=bits, refine=False)
    shutil.copy(nearest, rounded)

    assert round_weights(fp32, rounded, inputs, bits) == 50

    # Each weight is still one of the two steps around its exact value, within the range of
    # its bits, with the same scales; only the rounding moved.
    limit = {8: 127, 7: 64}[bits]
    before, after = weight_steps(nearest), weight_steps(rounded)
    moved = 0
    for name, (steps, scales) in after.items():
        old_steps, old_scales = before[name]
        np.testing.assert_array_equal(scales, old_scales)
        difference = steps.astype(int) - old_steps.astype(int)
        assert np.abs(difference).max() <= 1
        assert np.abs(steps.astype(int)).max() <= limit
        moved += int(np.count_nonzero(difference))
    assert moved > 1000

    # What it promises, on the inputs it was given: no layer's output error grows, and
    # together they shrink.
    error_before, error_after = output_errors(fp32, [nearest, rounded], inputs)
    for name, error in error_after.items():
        assert error <= error_before[name] * 1.0001, name
    assert sum(error_after.values()) < sum(error_before.values()) / 2

    # What it is for, on crops of other photos: logits nearer FP32's.
    held_out = photo_views(HELD_OUT_PHOTOS, bundle, seed=1)
    reference = logits(fp32, held_out)
    error = {p.name: np.mean((logits(p, held_out) - reference) ** 2) for p in (nearest, rounded)}
    assert error["rounded.onnx"] < error["nearest.onnx"]


def test_receptive_fields_reproduce_every_layer(model_dir: Path, bundle: ModelBundle) -> None:
    """The rows of inputs that H is built from are what each output value really sees: laid
    out against the flattened weights (plus the bias), they give ONNX Runtime's output of every
    Conv and Gemm of the real model, strides, asymmetric pads and depthwise ones included."""
    model = onnx.load(str(model_dir / "model.onnx"))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    layers = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    tensors = sorted({name for layer in layers for name in (layer.input[0], layer.output[0])})
    x = photo_views(("chelsea.png",), bundle, seed=0)[:2]
    (seen,) = tensors_by_batch(model, tensors, x)
    for layer in layers:
        kernel = weights[layer.input[1]]
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in layer.attribute}
        rows = receptive_fields(seen[layer.input[0]], layer.op_type, kernel.shape, attributes)
        flat = kernel.reshape(kernel.shape[0], -1)
        # Dense: every output channel sees the same rows; depthwise: channel c its own.
        shared = len(rows) == 1
        computed = rows[0] @ flat.T if shared else np.einsum("crn,cn->rc", rows, flat)
        computed = computed + weights[layer.input[2]]
        expected = seen[layer.output[0]]
        if expected.ndim == 4:  # rows run over (image, y, x); channels last
            expected = expected.transpose(0, 2, 3, 1)
        expected = expected.reshape(computed.shape)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(computed, expected, atol=1e-4 * scale, err_msg=layer.name)


def test_layers_are_matched_by_names_of_their_own(model_dir: Path, tmp_path: Path) -> None:
    model = onnx.load(str(model_dir / "model.onnx"))
    for node in model.graph.node:
        node.name = ""
    nameless = tmp_path / "nameless.onnx"
    onnx.save(model, str(nameless))
    with pytest.raises(ValueError, match="needs a name of its own"):
        round_weights(nameless, nameless, np.zeros((1, 3, 224, 224), np.float32), 8)
