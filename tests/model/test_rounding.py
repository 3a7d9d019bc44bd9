"""Hessian-aware rounding of the real Lite0 INT8 model's weights.

Quantizes the packaged FP32 bundle on 24 crops of three photos (ONNX Runtime's own quantizer,
no torch needed), then re-rounds its weights against those crops.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_helpers import skimage_photo
from onnx import numpy_helper

from imgclf.model import ModelBundle
from imgclf.model import calibration as cal
from imgclf.model.quantize import logits, quantize_int8
from imgclf.model.rounding import round_weights, second_moments

CALIBRATION = ("coffee.png", "chelsea.png", "astronaut.png")
HELD_OUT = ("motorcycle_left.png", "rocket.jpg", "horse.png")


def views(names: tuple[str, ...], bundle: ModelBundle, seed: int) -> np.ndarray:
    pictures = [cal.picture_from_bytes(name, skimage_photo(name)) for name in names]
    return cal.random_views(pictures, bundle.preprocessing, 8, seed=seed)


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
    inputs = views(CALIBRATION, bundle, seed=0)
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
    held_out = views(HELD_OUT, bundle, seed=1)
    reference = logits(fp32, held_out)
    error = {p.name: np.mean((logits(p, held_out) - reference) ** 2) for p in (nearest, rounded)}
    assert error["rounded.onnx"] < error["nearest.onnx"]
