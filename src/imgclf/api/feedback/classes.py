"""The classes a model knows, read from its bundle's ``labels.json``: a corrected class must be
one of them, named by its label name or its WordNet id.

Only the label files are read (no ONNX Runtime), so an API process without a worker checks
corrections too, provided the bundle folders are on its disk.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from imgclf.settings import Settings


@dataclass(frozen=True, slots=True)
class ModelClass:
    name: str
    wnid: str | None  # None when the name alone does not say which class (ImageNet has two "crane")


class UnknownClassError(ValueError):
    """A corrected class that the model's labels do not hold. Its message, which suggests near
    names, is worded only when read: the search takes milliseconds, and the error is raised
    inside a transaction that holds the database's write lock."""

    def __init__(self, given: str, classes: ClassList) -> None:
        super().__init__(given)
        self.given, self.classes = given, classes

    def __str__(self) -> str:
        near = difflib.get_close_matches(_key(self.given), list(self.classes.by_name), n=3)
        names = ", ".join(self.classes.by_name[k][0][0] for k in near)
        hint = f"; did you mean {names}?" if near else "."
        return (
            f"correct_class {self.given[:100]!r} is not one of the {self.classes.size} classes "
            f"of {self.classes.model or 'the model'}{hint} Give a label name (e.g. Eskimo_dog) "
            "or a WordNet id (e.g. n02109961)."
        )


def _key(text: str) -> str:
    """Names compare without case, and a space matches an underscore ("Eskimo dog")."""
    return text.strip().replace(" ", "_").casefold()


@dataclass(frozen=True)
class ClassList:
    model: str
    size: int
    by_wnid: dict[str, str]
    by_name: dict[str, list[tuple[str, str]]]  # key -> [(name, wnid)], most often one

    @classmethod
    def from_labels(cls, model: str, labels: list[tuple[str, str]]) -> ClassList:
        by_name: dict[str, list[tuple[str, str]]] = {}
        for name, wnid in labels:
            by_name.setdefault(_key(name), []).append((name, wnid))
        return cls(
            model, len(labels), {wnid.casefold(): name for name, wnid in labels if wnid}, by_name
        )

    def resolve(self, given: str) -> ModelClass:
        """The class ``given`` names; raises :class:`UnknownClassError`."""
        if (name := self.by_wnid.get(given.strip().casefold())) is not None:
            return ModelClass(name, given.strip().lower())
        matches = self.by_name.get(_key(given))
        if not matches:
            raise UnknownClassError(given, self)
        name, wnid = matches[0]
        return ModelClass(name, wnid if wnid and len(matches) == 1 else None)


def _bundle_folders(settings: Settings) -> list[Path]:
    """The configured bundle, then every bundle in the model repository (``<name>/`` or
    ``<name>/<version>/``), wherever it is."""
    models = settings.resolved_model_repository
    found = [settings.resolved_model_dir]
    found += sorted(p.parent for p in models.glob("*/bundle.json"))
    found += sorted(p.parent for p in models.glob("*/*/bundle.json"))
    return found


def _describes(folder: Path, model: str) -> tuple[bool, bool]:
    """(this very version, the same model name) for a model id such as ``name@version``."""
    try:
        meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, False
    if not isinstance(meta, dict):
        return False, False
    name = str(meta.get("name", ""))
    ids = {str(meta.get("model_id", "")), f"{name}@{meta.get('version', '')}"}
    return model in ids, bool(name) and model.split("@")[0] == name


def find_class_list(settings: Settings, model: str) -> ClassList | None:
    """The labels of ``model`` (a version's bundle, else another version of the same name,
    else the configured bundle: they name the same classes); None when no labels file is
    on this disk."""
    folders = [f for f in _bundle_folders(settings) if (f / "labels.json").is_file()]
    ranked = sorted(folders, key=lambda f: _describes(f, model), reverse=True)
    if not ranked:
        return None
    labels_file = ranked[0] / "labels.json"
    return _read_class_list(model, labels_file, labels_file.stat().st_mtime_ns)


@lru_cache(maxsize=32)
def _read_class_list(model: str, labels_file: Path, _mtime_ns: int) -> ClassList | None:
    try:
        raw = json.loads(labels_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, list):
        return None
    labels: list[tuple[str, str]] = []
    for entry in raw:
        if isinstance(entry, str):
            labels.append((entry, ""))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            labels.append((entry["name"], str(entry.get("wnid", ""))))
    return ClassList.from_labels(model, labels) if labels else None
