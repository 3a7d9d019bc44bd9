"""The real bundle and classifier, built once per session."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from model_helpers import DOG
from PIL import Image

from imgclf.model.bundle import ModelBundle, load_bundle
from imgclf.model.classifier import Classifier


@pytest.fixture(scope="session")
def bundle(model_dir: Path) -> ModelBundle:
    return load_bundle(model_dir)


@pytest.fixture(scope="session")
def classifier(bundle: ModelBundle) -> Classifier:
    return Classifier(bundle, threads=2)


@pytest.fixture(scope="session")
def dog_bytes() -> bytes:
    data: bytes = DOG.read_bytes()
    return data


@pytest.fixture(scope="session")
def dog_image(dog_bytes: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(dog_bytes))
    image.load()
    return image
