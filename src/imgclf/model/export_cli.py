"""``imgclf export-model`` and ``imgclf quantize``: build a bundle and say what was built."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from imgclf.model.bundle import BUNDLE_FILE
from imgclf.model.calibration import CalibrationError
from imgclf.model.export import MODELS, ExportError, export_bundle


def build_model(
    model: str,
    target: Path,
    version: int,
    calibration_dir: Path | None,
    weight_bits: int | None = None,
) -> int:
    """Export ``model`` to ``target``; exit code 0, or 2 with a message on stderr."""
    err = Console(stderr=True, soft_wrap=True)
    if model not in MODELS:
        err.print(f"[red]Unknown model {model!r}; choose one of {', '.join(MODELS)}.[/red]")
        return 2
    int8_only = {"--calibration-dir": calibration_dir, "--weight-bits": weight_bits}
    for option, value in int8_only.items():
        if value is not None and MODELS[model].precision != "int8":
            err.print(f"[red]{option} applies to INT8 models only, not {model}.[/red]")
            return 2
    try:
        bundle = export_bundle(
            target, model, version, calibration_dir=calibration_dir, weight_bits=weight_bits
        )
    except (CalibrationError, ExportError) as error:
        err.print(f"[red]{error}[/red]", highlight=False)
        return 2
    size_mb = bundle.onnx_path.stat().st_size / 1e6
    print(f"{bundle.model_id} (version {version}, {size_mb:.1f} MB) written to {target}")
    meta = json.loads((target / BUNDLE_FILE).read_text(encoding="utf-8"))
    if "calibration" in meta:
        checked = meta["agreement_with_fp32"]
        print(
            f"Weights in {meta['weight_bits']} bits. "
            f"Calibrated on {meta['calibration']['inputs']} crops of "
            f"{meta['calibration']['pictures']} images in {meta['calibration']['seconds']} s. "
            f"Against FP32 on {checked['inputs']} held-out inputs: top-1 agreement "
            f"{checked['top1']:.1%}, top-5 overlap {checked['top5_overlap']:.1%} "
            f"({checked['checked_on']})."
        )
    return 0
