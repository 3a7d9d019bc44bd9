"""What the CPU can do with 8-bit integers, which decides how an INT8 model should be built.

ONNX Runtime multiplies unsigned 8-bit activations by signed 8-bit weights. With VNNI (or AMX)
each product is summed into 32 bits. On x86 CPUs without it, AVX2 and plain AVX-512 use
``VPMADDUBSW``, which adds two neighbouring products into a 16-bit integer that saturates
(255 x 127 x 2 > 32,767), so the same INT8 file answers differently there. Weights limited to
7 bits (ONNX Runtime's ``reduce_range``) cannot saturate: 255 x 63 x 2 < 32,767. Measured on
EfficientNet-Lite0 (docs/benchmarks.md, "INT8: the recipe"): 8-bit weights are the better
choice on a CPU with VNNI, 7-bit weights on one without.
"""

from __future__ import annotations

import platform
from enum import StrEnum
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


class Int8DotProduct(StrEnum):
    VNNI = "VNNI (32-bit sums)"
    SATURATING = "AVX2 without VNNI (16-bit sums that saturate)"
    UNKNOWN = "unknown"


def int8_dot_product(cpuinfo: str | None = None) -> Int8DotProduct:
    """How this CPU (or the ``/proc/cpuinfo`` text given) sums 8-bit products."""
    if cpuinfo is None:
        if platform.machine().lower() not in {"x86_64", "amd64"}:
            return Int8DotProduct.UNKNOWN
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return Int8DotProduct.UNKNOWN
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    if flags & VNNI_FLAGS:
        return Int8DotProduct.VNNI
    if "avx2" in flags:
        return Int8DotProduct.SATURATING
    return Int8DotProduct.UNKNOWN


def default_weight_bits(dot_product: Int8DotProduct | None = None) -> int:
    """7 where 8-bit weights would saturate, else 8."""
    found = int8_dot_product() if dot_product is None else dot_product
    return 7 if found is Int8DotProduct.SATURATING else 8
