"""Helpers for the model tests: real photos and in-memory image files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

TEST_DATA = Path(__file__).parents[1] / "data"
DOG = TEST_DATA / "dog.jpeg"


def skimage_photo(name: str) -> bytes:
    """The original file of one of the photos scikit-image ships (no download involved)."""
    skimage = pytest.importorskip("skimage")
    folder = Path(str(skimage.__file__)).parent / "data"
    return (folder / name).read_bytes()


# (file bytes loader, classes that count as right)
PHOTOS = {
    "dog": (DOG.read_bytes, {"Eskimo_dog"}),
    "coffee": (lambda: skimage_photo("coffee.png"), {"espresso"}),
    "chelsea": (
        lambda: skimage_photo("chelsea.png"),
        {"tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat"},
    ),
    "rocket": (lambda: skimage_photo("rocket.jpg"), {"missile", "projectile", "space_shuttle"}),
}


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()
