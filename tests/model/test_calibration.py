"""Calibration pictures: packaged photos split in two, a folder of images, random crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_helpers import DOG

from imgclf.model.calibration import (
    KEPT_SIDE,
    CalibrationError,
    folder_pictures,
    packaged_pictures,
    random_views,
    split_halves,
)
from imgclf.model.export import PREPROCESSING


def test_packaged_photos_split_into_two_halves_that_share_nothing() -> None:
    pictures = packaged_pictures()
    calibrate, held_out = split_halves(pictures)
    assert len(pictures) >= 20  # scikit-image's wheel and matplotlib's sample data
    assert {p.name for p in calibrate}.isdisjoint({p.name for p in held_out})
    assert len(calibrate) + len(held_out) == len(pictures)
    assert all(min(p.image.size) <= KEPT_SIDE and p.image.mode == "RGB" for p in pictures)


def test_random_views_are_model_inputs_and_repeatable() -> None:
    pictures = packaged_pictures()[:2]
    views = random_views(pictures, PREPROCESSING, 3, seed=5)
    assert views.shape == (6, 3, 224, 224)
    assert views.dtype == np.float32
    assert np.array_equal(views, random_views(pictures, PREPROCESSING, 3, seed=5))
    assert not np.array_equal(views, random_views(pictures, PREPROCESSING, 3, seed=6))


def test_a_folder_gives_its_images_and_skips_what_does_not_decode(tmp_path: Path) -> None:
    (tmp_path / "a.jpeg").write_bytes(DOG.read_bytes())
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "b.jpg").write_bytes(DOG.read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".upload-partial.jpg").write_bytes(DOG.read_bytes()[:100])
    assert [p.name for p in folder_pictures(tmp_path)] == ["a.jpeg", "b.jpg"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "holds no image that decodes (0 file"),
        ({"broken.jpg": b"\xff\xd8\xff not a jpeg"}, "holds no image that decodes (1 file"),
        ({"notes.txt": b"text"}, "holds no image that decodes (0 file"),
    ],
)
def test_a_folder_without_usable_images_is_refused(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(CalibrationError, match=message.replace("(", r"\(")):
        folder_pictures(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        folder_pictures(tmp_path / "nowhere")
