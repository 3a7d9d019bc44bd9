"""The model repository: bundle folders ``<repository>/<name>/<version>/`` (Triton's shape).

Listing reads each ``bundle.json`` only: the checksum and the model itself are checked when a
worker loads a version (:func:`imgclf.model.load_bundle`). A ``<name>/`` folder holding a bundle
directly is that model's version 1, and ``IMGCLF_MODEL_DIR`` names one bundle folder to serve
alone: both are how a single bundle was configured before there were versions.

Which version of a name is *live* is not a property of the files: the service keeps it (in
memory and a small file under the data folder, or in Redis), so that a promotion never has to
touch a repository that may be read-only.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgclf.model.bundle import BUNDLE_FILE, BundleError, bundle_error, folder_identity
from imgclf.model.bundle import published_top1 as _published_top1

if TYPE_CHECKING:
    from imgclf.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One bundle of the repository, as its ``bundle.json`` describes it."""

    name: str
    version: int
    path: Path
    input_size: int
    precision: str = "fp32"
    top1_published: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class ModelCatalogue:
    """The models on disk: name -> version -> :class:`ModelVersion`, and the default name."""

    def __init__(self, versions: list[ModelVersion], default: str) -> None:
        self.models: dict[str, dict[int, ModelVersion]] = {}
        for entry in versions:
            self.models.setdefault(entry.name, {})[entry.version] = entry
        # A repository without the configured default (a bundle of one's own) serves its first.
        self.default = default if default in self.models else min(self.models, default="")

    @property
    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str) -> list[int]:
        return sorted(self.models.get(name, {}))

    def find(self, name: str, version: int) -> ModelVersion | None:
        return self.models.get(name, {}).get(version)

    def newest(self, name: str) -> int:
        return max(self.models[name])


def read_bundle_entry(path: Path) -> ModelVersion:
    """A bundle folder's catalogue entry (``bundle.json`` only); raises BundleError."""
    try:
        meta: Any = json.loads((path / BUNDLE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bundle_error(path, f"{BUNDLE_FILE} cannot be read ({error}).") from None
    if not isinstance(meta, dict):
        raise bundle_error(path, f"{BUNDLE_FILE} must hold a JSON object.")
    folder_name, folder_version = folder_identity(path)
    name, version, size = (
        meta.get("name", folder_name),
        meta.get("version", folder_version),
        meta.get("input_size"),
    )
    if not isinstance(name, str) or not isinstance(version, int) or not isinstance(size, int):
        raise bundle_error(path, f"{BUNDLE_FILE} needs a text name and integer version/size.")
    precision = meta.get("precision", "fp32")
    return ModelVersion(
        name=name,
        version=version,
        path=path,
        input_size=size,
        precision=precision if isinstance(precision, str) else "fp32",
        top1_published=_published_top1(meta),
    )


def scan_repository(root: Path) -> list[ModelVersion]:
    """Every readable bundle under ``root``; a broken or misplaced one is logged and left out,
    so one bad folder never takes the other models down."""
    found: list[ModelVersion] = []
    for model_dir in sorted(p for p in _listing(root) if p.is_dir()):
        candidates = (
            [model_dir]
            if (model_dir / BUNDLE_FILE).is_file()
            else [p for p in _listing(model_dir) if p.name.isdigit() and int(p.name) > 0]
        )
        for folder in sorted(candidates):
            try:
                entry = read_bundle_entry(folder)
            except BundleError as error:
                logger.warning("skipping %s: %s", folder, error)
                continue
            if folder is not model_dir and (entry.name, entry.version) != folder_identity(folder):
                logger.warning(
                    "skipping %s: its bundle.json says %s; move it to %s/%s/%d",
                    folder,
                    entry.ref,
                    root,
                    entry.name,
                    entry.version,
                )
                continue
            found.append(entry)
    return found


def _listing(folder: Path) -> list[Path]:
    """The folder's entries; none when it is not a folder, or is removed while it is read (a
    version being moved out of the repository is simply not there)."""
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_catalogue(settings: Settings) -> ModelCatalogue:
    """The models these settings serve: ``IMGCLF_MODEL_DIR``'s one bundle when set, else the
    repository's."""
    if settings.model_dir is not None:
        entries = _model_dir_entries(settings.model_dir)
    else:
        entries = scan_repository(settings.resolved_model_repository)
        if not entries:
            raise BundleError(
                f"No model bundle in the repository {settings.resolved_model_repository}. "
                "Build the default one with `imgclf export-model` (or `make bundle`), or set "
                "IMGCLF_MODEL_REPOSITORY (or IMGCLF_MODEL_DIR, one bundle folder)."
            )
    return ModelCatalogue(entries, settings.default_model)


def _model_dir_entries(path: Path) -> list[ModelVersion]:
    """``IMGCLF_MODEL_DIR``: one bundle folder, or one model's folder of version folders."""
    if (path / BUNDLE_FILE).is_file():
        return [read_bundle_entry(path)]
    versions = [entry for entry in scan_repository(path.parent) if entry.name == path.name]
    if not versions:
        raise bundle_error(path, f"{BUNDLE_FILE} is missing.")
    return versions


def live_record_path(settings: Settings) -> Path:
    return settings.data_dir / "live-models.json"


def read_live_record(path: Path) -> dict[str, int]:
    """The promoted versions, by name; nothing when no promotion was made yet."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def write_live_record(path: Path, live: dict[str, int]) -> None:
    """Replace the record atomically: a crash leaves the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".live-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(live, file, indent=2, sort_keys=True)
    os.replace(temporary, path)


def live_versions(catalogue: ModelCatalogue, recorded: dict[str, int]) -> dict[str, int]:
    """The live version of each name: the one recorded while it is on disk, else the newest."""
    return {
        name: recorded[name]
        if catalogue.find(name, recorded.get(name, 0))
        else catalogue.newest(name)
        for name in catalogue.names
    }


def bundle_path(settings: Settings, model: str | None = None) -> Path:
    """The folder of ``model`` (a name, or ``name@version``; by default the default model),
    at its live version unless one is named; raises BundleError naming what there is."""
    catalogue = read_catalogue(settings)
    name, _, version = (model or catalogue.default).partition("@")
    if name not in catalogue.models:
        raise BundleError(
            f"No model {name!r} in the repository; it has: {', '.join(catalogue.names)}."
        )
    live = live_versions(catalogue, read_live_record(live_record_path(settings)))
    entry = catalogue.find(name, int(version) if version.isdigit() else live[name])
    if entry is None:
        versions = ", ".join(str(v) for v in catalogue.versions(name))
        raise BundleError(f"No version {version} of {name}; it has versions {versions}.")
    return entry.path
