"""The exported graph against the torch network it came from, on real photos (needs torch)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from model_helpers import PHOTOS

from imgclf.model.bundle import ModelBundle
from imgclf.model.images import ImageLimits
from imgclf.model.preprocessing import preprocess

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from imgclf.model.export import (  # noqa: E402
    ExportError,
    export_bundle,
    imagenet_labels,
    verification_inputs,
    verify_onnx,
)
from imgclf.model.network import EfficientNetLite, load_pretrained, same_padding  # noqa: E402


@pytest.fixture(scope="module")
def network() -> EfficientNetLite:
    return load_pretrained()


@pytest.fixture(scope="module")
def photo_batch(bundle: ModelBundle) -> np.ndarray:
    return np.stack(
        [preprocess(load(), bundle.preprocessing, ImageLimits()) for load, _ in PHOTOS.values()]
    )


def test_onnx_matches_torch_on_real_photos(
    bundle: ModelBundle, network: EfficientNetLite, photo_batch: np.ndarray
) -> None:
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: photo_batch})[0]
    with torch.inference_mode():
        torch_logits = network(torch.from_numpy(photo_batch)).numpy()
    assert np.abs(onnx_logits - torch_logits).max() < 1e-3
    # and the torch reference itself gets the photos right
    for (_, expected), row in zip(PHOTOS.values(), torch_logits, strict=True):
        assert bundle.labels[int(row.argmax())].name in expected


def test_verification_refuses_a_graph_that_differs(
    bundle: ModelBundle, network: EfficientNetLite
) -> None:
    inputs = verification_inputs()[:2]
    assert verify_onnx(bundle.onnx_path, network, inputs) < 1e-3
    altered = copy.deepcopy(network)
    with torch.no_grad():
        altered._fc.bias[0] += 0.01
    with pytest.raises(ExportError, match=r"differ by 1\.00e-02"):
        verify_onnx(bundle.onnx_path, altered, inputs)


def test_same_padding_is_tensorflows() -> None:
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(56, 3, 1) == (1, 1)
    assert same_padding(7, 1, 1) == (0, 0)


def test_labels_are_keras_style_with_wordnet_ids() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[248] == {"index": 248, "wnid": "n02109961", "name": "Eskimo_dog"}
    names = {entry["name"] for entry in labels}
    assert {"tabby", "tiger_cat", "espresso", "missile", "space_shuttle"} <= names
    assert all(" " not in name for name in names)


@pytest.mark.slow
def test_export_replaces_a_bundle_in_one_step(tmp_path: Path, bundle: ModelBundle) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "stale.txt").write_text("from an older export")
    exported = export_bundle(target)
    assert sorted(p.name for p in target.iterdir()) == ["bundle.json", "labels.json", "model.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging folders left behind
    assert exported.labels == bundle.labels
    meta = json.loads((target / "bundle.json").read_text())
    assert meta["model_id"] == f"efficientnet-lite0@{meta['sha256'][:12]}"
    assert meta["opset"] >= 17
