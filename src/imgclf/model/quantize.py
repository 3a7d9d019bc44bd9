"""FP32 ONNX -> INT8 ONNX by static quantization, and how far the INT8 model's answers move.

ONNX Runtime's static quantization in QDQ form: weights signed 8-bit per output channel,
activations unsigned 8-bit per tensor (the pair x86 CPUs multiply fastest), ranges from
calibration pictures (MinMax). Then, on the same pictures, each weight rounded down or up,
whichever keeps its layer's output nearer FP32's (model/rounding.py), and each layer's biases
corrected so that its channel means match FP32's (model/bias_correction.py): together they
took the top-1 agreement on 135 held-out crops from 83.0% to 95.6%, and on 252 crops of other
photos from 87.7% to 96.4% (docs/benchmarks.md, "INT8: the recipe"). Entropy and
Percentile calibration moved the agreement by one answer in 75 and took 7-9x longer; keeping
the first and last layers in FP32 gained nothing and grew the file to 9 MB. Weights take 8
bits, or 7 (``reduce_range``) for CPUs whose 8-bit dot products saturate (imgclf.model.cpu):
by default those of the CPU that builds the model.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.model import calibration
from imgclf.model.bias_correction import correct_biases
from imgclf.model.bundle import Preprocessing, file_sha256
from imgclf.model.cpu import int8_dot_product
from imgclf.model.rounding import round_weights

CALIBRATION_BATCH = 8
CALIBRATION_VIEWS = 8  # random crops per calibration picture...
# ... fewer when there are many pictures: the calibrator keeps every layer's output of every
# input until it is done (1.4 GB at peak for 112 inputs; its option to flush them early drops
# what it flushes).
CALIBRATION_INPUTS = 128
HELD_OUT_VIEWS = 4  # random crops per held-out picture, besides its centre crop


@dataclass(frozen=True)
class Agreement:
    """How an INT8 model's answers compare with FP32's on the same inputs."""

    inputs: int
    top1: float  # share of inputs whose top class is the same
    top5_overlap: float  # mean share of FP32's top 5 found in INT8's top 5

    def as_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "top1": round(self.top1, 4),
            "top5_overlap": round(self.top5_overlap, 4),
        }


@dataclass(frozen=True)
class CalibrationPictures:
    pictures: list[calibration.Picture]
    held_out: list[calibration.Picture]
    source: str


def calibration_pictures(calibration_dir: Path | None) -> CalibrationPictures:
    """The pictures to calibrate on (the folder's, else half of the packaged photos) and the
    packaged photos held out to check the result; CalibrationError when there are none."""
    packaged, held_out = calibration.split_halves(calibration.packaged_pictures())
    if calibration_dir is None:
        names = ", ".join(p.name for p in packaged)
        source = f"{len(packaged)} of the sample photos scikit-image and matplotlib ship: {names}"
        return CalibrationPictures(packaged, held_out, source)
    pictures = calibration.folder_pictures(calibration_dir)
    return CalibrationPictures(pictures, held_out, f"{len(pictures)} images from {calibration_dir}")


def quantize_in_place(
    onnx_path: Path,
    config: Preprocessing,
    chosen: CalibrationPictures,
    fp32_name: str,
    weight_bits: int,
) -> dict[str, Any]:
    """Replace the FP32 model at ``onnx_path`` by its INT8 quantization (weights in
    ``weight_bits``, 7 or 8); returns what ``bundle.json`` records about the calibration and
    the agreement with FP32."""
    views = max(1, min(CALIBRATION_VIEWS, CALIBRATION_INPUTS // len(chosen.pictures)))
    inputs = calibration.random_views(chosen.pictures, config, views, seed=0)
    fp32_path = onnx_path.with_name("fp32.onnx")
    os.replace(onnx_path, fp32_path)
    started = time.perf_counter()
    quantize_int8(fp32_path, onnx_path, inputs, weight_bits)
    seconds = time.perf_counter() - started
    held_out = chosen.held_out
    checked = held_out_agreement(fp32_path, onnx_path, held_out, config)
    fp32_sha = file_sha256(fp32_path)
    fp32_path.unlink()
    return {
        "quantized_from": f"{fp32_name}@{fp32_sha[:12]}",
        "weight_bits": weight_bits,
        "calibration": {
            "images": chosen.source,
            "pictures": len(chosen.pictures),
            "inputs": len(inputs),
            "views": f"{views} random crops (25-100% of the area) a picture, half mirrored",
            "method": "ONNX Runtime static quantization, QDQ, per-channel S8 weights "
            f"({weight_bits}-bit range), U8 activations, MinMax; then each weight rounded "
            "down or up to keep its layer's output nearest FP32's (Hessian-aware rounding), "
            "and each layer's biases corrected to FP32's channel means, in graph order",
            "seconds": round(seconds, 1),
        },
        "agreement_with_fp32": {
            **checked.as_json(),
            "held_out": f"centre and {HELD_OUT_VIEWS} random crops of the {len(held_out)} "
            f"other sample photos: {', '.join(p.name for p in held_out)}",
            # The same file answers differently where 8-bit products saturate (model/cpu.py).
            "checked_on": f"8-bit dot products on this CPU: {int8_dot_product()}",
        },
    }


def held_out_agreement(
    fp32_onnx: Path, int8_onnx: Path, pictures: list[calibration.Picture], config: Preprocessing
) -> Agreement:
    """INT8 against FP32 on pictures the calibration did not see, in crops it did not use."""
    inputs = np.concatenate(
        [
            calibration.centre_views(pictures, config),
            calibration.random_views(pictures, config, HELD_OUT_VIEWS, seed=1),
        ]
    )
    return agreement(logits(fp32_onnx, inputs), logits(int8_onnx, inputs))


def quantize_int8(
    fp32_onnx: Path,
    target: Path,
    inputs: np.ndarray,
    weight_bits: int = 8,
    refine: bool = True,
) -> None:
    """Write the INT8 (QDQ) model of ``fp32_onnx`` to ``target``, calibrated on ``inputs``
    (preprocessed, N x 3 x H x W), its weights in ``weight_bits`` (7 or 8); unless ``refine``
    is off, its weights then re-rounded and its biases corrected on the same inputs."""
    if weight_bits not in (7, 8):
        raise ValueError(f"weights take 7 or 8 bits, not {weight_bits}")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = _input_name(fp32_onnx)

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {input_name: inputs[start : start + CALIBRATION_BATCH]}
                for start in range(0, len(inputs), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        # Shape inference and graph clean-up first, as the quantization docs advise.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=weight_bits == 7,
            calibrate_method=CalibrationMethod.MinMax,
            # Biases stay float in the file; ONNX Runtime still fuses every Conv into a
            # QLinearConv at load, at the same speed and top-1 agreement. As int32 in the file,
            # the bias of a channel whose weights are all (near) zero overflows its tiny scale:
            # 26 convolutions of Lite0 have one, and each logged a warning.
            extra_options={"QuantizeBias": False},
        )
        if refine:
            # Against the prepared model: the one whose node names the INT8 model keeps.
            rounded = round_weights(prepared, target, inputs, weight_bits)
            corrected = correct_biases(prepared, target, inputs)
            if min(rounded, corrected) == 0:
                raise ValueError(f"{fp32_onnx} has no layer whose weights could be refined")


def logits(onnx_path: Path, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate(
        [session.run(None, {name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    )


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Top-1 agreement and top-5 overlap of ``candidate``'s logits with ``reference``'s."""
    top5_reference = np.argsort(-reference, axis=1)[:, :5]
    top5_candidate = np.argsort(-candidate, axis=1)[:, :5]
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / 5
        for a, b in zip(top5_reference, top5_candidate, strict=True)
    ]
    return Agreement(
        inputs=len(reference),
        top1=float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1))),
        top5_overlap=float(np.mean(overlap)),
    )


def _input_name(onnx_path: Path) -> str:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    name: str = next(i.name for i in model.graph.input if i.name not in initializers)
    return name
