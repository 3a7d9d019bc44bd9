"""The 1000 ImageNet class names, for the "right class" select, without the model bundle.

The UI may run on a host that has no model (the ``ui`` extra installs none), so the names ship
as ``labels.txt`` beside this module: one Keras-style name a line, in the model's output order.
It is generated from a bundle's ``labels.json`` with ``python -m imgclf.ui.labels BUNDLE_DIR``;
a test checks that it still matches the bundle.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

LABELS_FILE = "labels.txt"


def display_name(label: str) -> str:
    """A class name in words: ``Eskimo_dog`` -> ``Eskimo dog``."""
    return label.replace("_", " ")


@lru_cache
def class_names() -> tuple[str, ...]:
    """The names in ``labels.txt``, in the model's order; empty if the file is missing."""
    try:
        text = resources.files(__package__ or "imgclf.ui").joinpath(LABELS_FILE).read_text("utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def choices(first: list[str] | None = None) -> list[str]:
    """Options for a select: ``first`` (say, the model's top 5), then every other name A-Z.

    ImageNet has two "crane"s and two "maillot"s; each name is offered once.
    """
    head = list(dict.fromkeys(first or []))
    rest = sorted(set(class_names()) - set(head), key=str.casefold)
    return head + rest


def bundle_class_names(bundle_dir: Path) -> list[str]:
    """The names in a model bundle's ``labels.json``, in output order."""
    entries = json.loads((bundle_dir / "labels.json").read_text("utf-8"))
    return [str(entry["name"]) for entry in sorted(entries, key=lambda entry: entry["index"])]


def write_labels_file(bundle_dir: Path, target: Path | None = None) -> Path:
    target = target or Path(__file__).with_name(LABELS_FILE)
    target.write_text("\n".join(bundle_class_names(bundle_dir)) + "\n", encoding="utf-8")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m imgclf.ui.labels BUNDLE_DIR")
    print(f"wrote {write_labels_file(Path(sys.argv[1]))}")
