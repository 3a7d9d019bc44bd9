"""How the CPU sums 8-bit products decides an INT8 model's weight bits, and a served INT8 model
with 8-bit weights on a CPU where they saturate is said in the log."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from imgclf.model import classifier as classifier_module
from imgclf.model.bundle import load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.cpu import Int8DotProduct, default_weight_bits, int8_dot_product

EPYC_AVX2 = "processor\t: 0\nflags\t\t: fpu vme sse4_2 avx avx2 fma bmi2\n\nprocessor\t: 1\n"
XEON_VNNI = "flags\t\t: fpu avx avx2 avx512f avx512bw avx512_vnni\n"
ALDER_LAKE = "flags\t\t: fpu avx avx2 avx_vnni\n"
OLD_CPU = "flags\t\t: fpu sse sse2 sse4_2 avx\n"


@pytest.mark.parametrize(
    ("cpuinfo", "found", "bits"),
    [
        (EPYC_AVX2, Int8DotProduct.SATURATING, 7),
        (XEON_VNNI, Int8DotProduct.VNNI, 8),
        (ALDER_LAKE, Int8DotProduct.VNNI, 8),
        (OLD_CPU, Int8DotProduct.UNKNOWN, 8),
        ("", Int8DotProduct.UNKNOWN, 8),
    ],
)
def test_the_cpu_flags_choose_the_weight_bits(
    cpuinfo: str, found: Int8DotProduct, bits: int
) -> None:
    assert int8_dot_product(cpuinfo) is found
    assert default_weight_bits(found) == bits


def test_this_machine_is_read_from_its_own_cpuinfo() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    assert int8_dot_product() is int8_dot_product(cpuinfo.read_text())
    assert default_weight_bits() in (7, 8)


def _int8_copy(model_dir: Path, target: Path, **meta: object) -> Path:
    """The FP32 bundle's files under INT8's bundle.json fields: what the warning reads."""
    target.mkdir()
    for name in ("model.onnx", "labels.json"):
        os.symlink(model_dir / name, target / name)
    bundle = json.loads((model_dir / "bundle.json").read_text())
    bundle.update(precision="int8", **meta)
    (target / "bundle.json").write_text(json.dumps(bundle))
    return target


@pytest.mark.parametrize(
    ("weight_bits", "cpu", "warned"),
    [
        (8, Int8DotProduct.SATURATING, True),
        (None, Int8DotProduct.SATURATING, True),  # built before weight_bits was recorded
        (7, Int8DotProduct.SATURATING, False),
        (8, Int8DotProduct.VNNI, False),
    ],
)
def test_int8_weights_that_saturate_here_are_said_at_load(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    weight_bits: int | None,
    cpu: Int8DotProduct,
    warned: bool,
) -> None:
    meta = {} if weight_bits is None else {"weight_bits": weight_bits}
    bundle = load_bundle(_int8_copy(model_dir, tmp_path / "int8", **meta))
    monkeypatch.setattr(classifier_module, "int8_dot_product", lambda: cpu)
    with caplog.at_level(logging.WARNING, logger="imgclf.model.classifier"):
        Classifier(bundle, threads=1)
    said = [r.getMessage() for r in caplog.records if "saturate" in r.getMessage()]
    assert bool(said) is warned
    if warned:
        assert bundle.ref in said[0]
        assert "imgclf quantize --weight-bits 7" in said[0]
