"""The model bundle: a folder with ``model.onnx``, ``labels.json`` and ``bundle.json``.

Any ONNX image classifier can be served by giving it such a folder (see ``README.md`` here):

- ``model.onnx``: one float32 input of shape (N, 3, input_size, input_size), RGB, NCHW; one
  output of shape (N, classes): logits, or probabilities with ``"output": "probabilities"``.
- ``labels.json``: a list, one entry per class in output order: ``{"index", "wnid", "name"}``
  (a plain list of names is accepted too).
- ``bundle.json``: ``model_id``, ``sha256`` (of ``model.onnx``), ``input_size``, and optionally
  ``name`` and ``version`` (by default the folders': ``<name>/<version>/``, or ``<name>/`` as
  version 1), ``resize``, ``mean``, ``std`` (scalars; pixels become ``(x - mean) / std``),
  ``color`` ("RGB"), ``layout`` ("NCHW"), ``output``, ``num_classes``, ``source``, ``license``,
  ``precision`` ("fp32", "int8"), ``weight_bits`` (an INT8 model's: 7 or 8),
  ``top1_published`` (ImageNet top-1, 0..1 or percent).

Everything is checked at load, so a broken bundle stops the service at start-up with a message
that names the folder and the fix, rather than failing its first request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"
OUTPUT_KINDS = ("logits", "probabilities")


class BundleError(RuntimeError):
    """A missing or unusable bundle; the message names the folder and how to fix it."""


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the model's input (RGB order)."""

    input_size: int = 224
    resize: int = 256
    mean: float = 127.0
    std: float = 128.0


@dataclass(frozen=True)
class Label:
    index: int
    wnid: str
    name: str


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    model_id: str
    name: str
    version: int
    onnx_path: Path
    labels: tuple[Label, ...]
    preprocessing: Preprocessing
    sha256: str
    source: str
    license: str
    output: str = "logits"
    precision: str = "fp32"
    weight_bits: int | None = None
    top1_published: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def ref(self) -> str:
        """``name@version``: how answers, logs and the database name this model."""
        return f"{self.name}@{self.version}"


def folder_identity(path: Path) -> tuple[str, int]:
    """The name and version a bundle folder's place gives it: ``<name>/<version>/`` in a
    repository, or a lone ``<name>/`` folder as version 1."""
    if path.name.isdigit() and int(path.name) > 0:
        return path.parent.name, int(path.name)
    return path.name, 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_error(path: Path, problem: str) -> BundleError:
    return BundleError(
        f"The model bundle at {path} is not usable: {problem} "
        f"Build it with `imgclf export-model --output {path}` (or `make bundle`), "
        "or set IMGCLF_MODEL_DIR to a valid bundle folder."
    )


def load_bundle(path: Path) -> ModelBundle:
    """Read and check a bundle folder; raises :class:`BundleError`."""
    path = Path(path)
    if not (path / BUNDLE_FILE).is_file():
        raise bundle_error(path, f"{BUNDLE_FILE} is missing.")
    meta = _read_json(path, BUNDLE_FILE)
    if not isinstance(meta, dict):
        raise bundle_error(path, f"{BUNDLE_FILE} must hold a JSON object.")
    try:
        return _parse(path, meta)
    except (TypeError, ValueError) as error:
        raise bundle_error(path, f"{BUNDLE_FILE} is invalid ({error}).") from None


def _parse(path: Path, meta: dict[str, Any]) -> ModelBundle:
    model_id = _field(meta, "model_id", str)
    folder_name, folder_version = folder_identity(path)
    name = _field(meta, "name", str, default=folder_name)
    version = _field(meta, "version", int, default=folder_version)
    if not name or "@" in name or "/" in name or version < 1:
        raise ValueError("name must be a plain word and version a positive integer")
    expected_sha = _field(meta, "sha256", str).lower()
    input_size = _field(meta, "input_size", int)
    preprocessing = Preprocessing(
        input_size=input_size,
        resize=_field(meta, "resize", int, default=input_size * 8 // 7),
        mean=float(_field(meta, "mean", (int, float), default=127.0)),
        std=float(_field(meta, "std", (int, float), default=128.0)),
    )
    if preprocessing.input_size < 1 or preprocessing.resize < preprocessing.input_size:
        raise ValueError("need input_size >= 1 and resize >= input_size")
    if preprocessing.std <= 0:
        raise ValueError("std must be positive")
    for key, allowed in (("color", "RGB"), ("layout", "NCHW")):
        if _field(meta, key, str, default=allowed) != allowed:
            raise ValueError(f'{key} must be "{allowed}"')
    output = _field(meta, "output", str, default="logits")
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {', '.join(OUTPUT_KINDS)}")

    onnx_path = path / _field(meta, "onnx", str, default=MODEL_FILE)
    if not onnx_path.is_file():
        raise bundle_error(path, f"{onnx_path.name} is missing.")
    actual_sha = file_sha256(onnx_path)
    if actual_sha != expected_sha:
        raise bundle_error(
            path,
            f"the checksum of {onnx_path.name} does not match {BUNDLE_FILE} "
            f"(expected {expected_sha[:12]}..., found {actual_sha[:12]}...); "
            "the file is damaged or was replaced.",
        )

    labels = _read_labels(path, _field(meta, "labels", str, default=LABELS_FILE))
    num_classes = _field(meta, "num_classes", int, default=len(labels))
    if num_classes != len(labels):
        raise bundle_error(
            path, f"{BUNDLE_FILE} says {num_classes} classes but there are {len(labels)} labels."
        )
    return ModelBundle(
        path=path,
        model_id=model_id,
        name=name,
        version=version,
        onnx_path=onnx_path,
        labels=labels,
        preprocessing=preprocessing,
        sha256=actual_sha,
        source=_field(meta, "source", str, default="unknown"),
        license=_field(meta, "license", str, default="unknown"),
        output=output,
        precision=_field(meta, "precision", str, default="fp32"),
        weight_bits=_field(meta, "weight_bits", int, default=None),
        top1_published=published_top1(meta),
    )


def published_top1(meta: dict[str, Any]) -> float | None:
    """The published ImageNet top-1 as a fraction (bundles may write 75.1 or 0.751)."""
    value = meta.get("top1_published")
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return round(float(value) / 100, 6) if value > 1 else float(value)


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise bundle_error(path, f"{name} is missing.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bundle_error(path, f"{name} cannot be read ({error}).") from None


def _read_labels(path: Path, name: str) -> tuple[Label, ...]:
    raw = _read_json(path, name)
    if not isinstance(raw, list) or not raw:
        raise bundle_error(path, f"{name} must be a non-empty JSON list.")
    labels = []
    for position, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"index": position, "wnid": "", "name": entry}
        if (
            not isinstance(entry, dict)
            or entry.get("index") != position
            or not isinstance(entry.get("name"), str)
            or not entry["name"]
            or not isinstance(entry.get("wnid", ""), str)
        ):
            raise bundle_error(
                path,
                f'{name} entry {position} must be {{"index": {position}, "wnid": "...", '
                f'"name": "..."}}; found {str(entry)[:80]}.',
            )
        labels.append(Label(index=position, wnid=entry.get("wnid", ""), name=entry["name"]))
    return tuple(labels)


def _field(
    meta: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if key not in meta:
        if default is ...:
            raise ValueError(f"{key} is required")
        return default
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{key} has the wrong type")
    return value
