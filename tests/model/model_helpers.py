"""Helpers for the model tests: real photos and in-memory image files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.model import calibration as cal
from imgclf.model.bundle import ModelBundle

TEST_DATA = Path(__file__).parents[1] / "data"
DOG = TEST_DATA / "dog.jpeg"


def skimage_photo(name: str) -> bytes:
    """The original file of one of the photos scikit-image ships (no download involved)."""
    skimage = pytest.importorskip("skimage")
    folder = Path(str(skimage.__file__)).parent / "data"
    return (folder / name).read_bytes()


# Photos an INT8 refinement test calibrates on, and others it checks the result on, in this
# many random crops each: 4 show what 8 showed, in half the time.
VIEWS_PER_PHOTO = 4
CALIBRATION_PHOTOS = ("coffee.png", "chelsea.png", "astronaut.png")
HELD_OUT_PHOTOS = ("motorcycle_left.png", "rocket.jpg", "horse.png")


def photo_views(names: tuple[str, ...], bundle: ModelBundle, seed: int) -> np.ndarray:
    """``VIEWS_PER_PHOTO`` random crops of each named scikit-image photo, prepared for
    ``bundle``'s model."""
    pictures = [cal.picture_from_bytes(name, skimage_photo(name)) for name in names]
    return cal.random_views(pictures, bundle.preprocessing, VIEWS_PER_PHOTO, seed=seed)


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
