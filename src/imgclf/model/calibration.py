"""Pictures for INT8 calibration and for checking an INT8 model against FP32.

Two sources: a folder of images (in production the upload folder: exactly what the service
sees), or a set assembled offline from the photos that installed packages ship (scikit-image's
bundled data files, matplotlib's sample data; nothing is downloaded). The packaged pictures are
split in two halves by name: one half calibrates, the other is held out to measure agreement.
Each picture becomes several views (random crops, flips), so a few dozen files give a few
hundred differently framed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgclf.model.bundle import Preprocessing
from imgclf.model.images import SUPPORTED_EXTENSIONS, ImageError, ImageLimits
from imgclf.model.preprocessing import decode_rgb, to_tensor

# Shipped inside the scikit-image wheel (skimage/data/); the others in its registry are
# downloaded on first use, and never used here.
SKIMAGE_FILES = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "chessboard_RGB.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "logo.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "phantom.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
MATPLOTLIB_FILES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
LIMITS = ImageLimits()
# Pictures are kept at this shorter side at most: enough for a crop of a quarter of the area to
# be resized down to the model's input, and 500 KB a picture rather than 36 MB for 12 MP.
KEPT_SIDE = 512


class CalibrationError(ValueError):
    """No usable calibration pictures; the message says where we looked and what is needed."""


@dataclass(frozen=True)
class Picture:
    name: str
    image: Image.Image


def packaged_pictures() -> list[Picture]:
    """The photos scikit-image and matplotlib ship in their wheels, sorted by name."""
    pictures = []
    for folder, names in _package_folders():
        for name in names:
            path = folder / name
            if path.is_file():
                pictures.append(Picture(name, _decode(path.read_bytes())))
    if not pictures:
        raise CalibrationError(
            "No packaged sample photos found: install scikit-image or matplotlib "
            "(the export extra), or pass --calibration-dir."
        )
    return sorted(pictures, key=lambda p: p.name)


def _package_folders() -> list[tuple[Path, tuple[str, ...]]]:
    folders: list[tuple[Path, tuple[str, ...]]] = []
    try:
        import skimage

        folders.append((Path(str(skimage.__file__)).parent / "data", SKIMAGE_FILES))
    except ImportError:
        pass
    try:
        import matplotlib

        folders.append((Path(matplotlib.get_data_path()) / "sample_data", MATPLOTLIB_FILES))
    except ImportError:
        pass
    return folders


def split_halves(pictures: list[Picture]) -> tuple[list[Picture], list[Picture]]:
    """Every other picture by name: (calibration, held out)."""
    return pictures[0::2], pictures[1::2]


def folder_pictures(folder: Path, limit: int = 256) -> list[Picture]:
    """Up to ``limit`` images found under ``folder`` (sorted), skipping files that fail to
    decode; CalibrationError when the folder is missing or holds no usable image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"The calibration folder {folder} does not exist.")
    paths = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in SUPPORTED_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )
    pictures = []
    for path in paths:
        try:
            pictures.append(Picture(path.name, _decode(path.read_bytes())))
        except (ImageError, OSError):
            continue
        if len(pictures) == limit:
            break
    if not pictures:
        extensions = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise CalibrationError(
            f"The calibration folder {folder} holds no image that decodes "
            f"({len(paths)} file(s) with an image extension: {extensions}); "
            "point --calibration-dir at a folder of photos like those the service classifies."
        )
    return pictures


def _decode(data: bytes) -> Image.Image:
    image = decode_rgb(data, KEPT_SIDE, LIMITS)
    scale = KEPT_SIDE / min(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return image


def centre_views(pictures: list[Picture], config: Preprocessing) -> np.ndarray:
    """Each picture as the service sees it: resize, centre crop."""
    return np.stack([to_tensor(p.image, config) for p in pictures])


def random_views(
    pictures: list[Picture], config: Preprocessing, per_picture: int, seed: int
) -> np.ndarray:
    """``per_picture`` random crops of each picture (25-100% of its area, aspect 3:4 to 4:3),
    half of them mirrored, prepared like an upload of that crop."""
    rng = np.random.default_rng(seed)
    views = []
    for picture in pictures:
        for _ in range(per_picture):
            crop = _random_crop(picture.image, rng)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            views.append(to_tensor(crop, config))
    return np.stack(views)


def _random_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = image.size
    area = width * height * rng.uniform(0.25, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_w = min(width, max(1, round(np.sqrt(area * aspect))))
    crop_h = min(height, max(1, round(np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return image.crop((left, top, left + crop_w, top + crop_h))


def picture_from_bytes(name: str, data: bytes) -> Picture:
    return Picture(name, _decode(data))
