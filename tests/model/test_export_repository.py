"""``imgclf export-model`` and ``imgclf quantize`` into a model repository (needs torch).

Each export runs the real weights through torch, ONNX and (for INT8) ONNX Runtime's
quantization; the INT8 one calibrates on three pictures to stay quick, and is built once for
the run (``int8_build`` in tests/conftest.py), as the shadow comparisons use it too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from model_helpers import DOG
from typer.testing import CliRunner, Result

from imgclf.cli import app
from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.cpu import int8_dot_product
from imgclf.model.images import ImageLimits
from tests.conftest import Int8Build

pytest.importorskip("torch")

Invoke = Callable[..., Result]
BUNDLE_FILES = ["bundle.json", "labels.json", "model.onnx"]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setenv("IMGCLF_DATA_DIR", str(tmp_path / "data"))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    return invoke


def top_label(model_dir: Path) -> str:
    classifier = Classifier(load_bundle(model_dir), threads=2)
    result = classifier.classify_bytes([DOG.read_bytes()], ImageLimits(), 1)[0]
    assert isinstance(result, list), result
    return result[0].label


@pytest.mark.slow
def test_quantize_writes_an_int8_version_that_still_sees_the_dog(int8_build: Int8Build) -> None:
    assert int8_build.returncode == 0, int8_build.stdout + int8_build.stderr
    repository, folder = int8_build.repository, int8_build.folder
    assert sorted(p.name for p in folder.iterdir()) == BUNDLE_FILES
    assert [p.name for p in repository.iterdir()] == ["efficientnet-lite0-int8"]
    assert [p.name for p in folder.parent.iterdir()] == ["3"]  # no staging folders left

    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["name"] == "efficientnet-lite0-int8"
    assert meta["version"] == 3
    assert meta["precision"] == "int8"
    assert meta["top1_published"] == 74.4
    assert meta["model_id"] == f"efficientnet-lite0-int8@{meta['sha256'][:12]}"
    assert meta["quantized_from"].startswith("efficientnet-lite0@")
    assert meta["weight_bits"] == 7
    assert "S8 weights (7-bit range)" in meta["calibration"]["method"]
    assert meta["calibration"]["pictures"] == 3
    assert meta["calibration"]["inputs"] == 24
    assert str(int8_build.calibration_dir) in meta["calibration"]["images"]
    checked = meta["agreement_with_fp32"]
    assert checked["inputs"] >= 50
    assert 0 < checked["top1"] <= 1
    assert 0 < checked["top5_overlap"] <= 1
    assert f"{checked['inputs']} held-out inputs" in int8_build.stdout
    assert checked["checked_on"] == f"8-bit dot products on this CPU: {int8_dot_product()}"
    assert load_bundle(folder).weight_bits == 7

    assert (folder / "model.onnx").stat().st_size < 7_000_000  # FP32 is 18.5 MB
    assert top_label(folder) == "Eskimo_dog"


@pytest.mark.slow
def test_fp32_models_go_to_the_repository_under_the_data_folder(
    run: Invoke, tmp_path: Path
) -> None:
    for model, size, published in (
        ("efficientnet-lite0", 224, 75.1),
        ("efficientnet-lite2", 260, 77.6),
    ):
        result = run("export-model", "--model", model)
        assert result.exit_code == 0, result.output
        folder = tmp_path / "data" / "models" / model / "1"
        meta = json.loads((folder / "bundle.json").read_text())
        assert (meta["name"], meta["version"], meta["precision"]) == (model, 1, "fp32")
        assert (meta["input_size"], meta["top1_published"]) == (size, published)
        assert "calibration" not in meta
        assert top_label(folder) == "Eskimo_dog"


@pytest.mark.slow
def test_output_still_writes_one_bundle_folder(run: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    result = run("export-model", "--output", str(target), "--version", "2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in target.iterdir()) == BUNDLE_FILES
    assert json.loads((target / "bundle.json").read_text())["version"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export-model", "--model", "resnet-50"], "Unknown model 'resnet-50'; choose one of"),
        (
            ["export-model", "--calibration-dir", "."],
            "--calibration-dir applies to INT8 models only",
        ),
        (["export-model", "--weight-bits", "7"], "--weight-bits applies to INT8 models only"),
        (["quantize", "--weight-bits", "6"], "Invalid value for '--weight-bits'"),
        (["quantize", "--calibration-dir", "{empty}"], "holds no image that decodes"),
        (["quantize", "--calibration-dir", "{missing}"], "does not exist"),
    ],
)
def test_bad_requests_are_refused_with_a_reason_and_write_nothing(
    run: Invoke, tmp_path: Path, args: list[str], message: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    filled = [a.format(empty=empty, missing=tmp_path / "missing") for a in args]
    result = run(*filled, "--repository", str(tmp_path / "repo"))
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "repo").exists()
