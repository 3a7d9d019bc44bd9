"""Bytes -> validated RGB image -> float32 CHW tensor, the way the model was trained.

Shorter side to ``resize`` (bilinear), centre crop ``input_size``, RGB, ``(x - mean) / std``.
JPEGs are decoded with Pillow's draft mode: libjpeg scales the DCT by 1/2, 1/4 or 1/8 while
decoding, to the smallest scale that keeps the shorter side at least ``resize``, so a 12 MP photo
costs a fraction of a full decode. Transparent images are composited on white (a transparent
background is usually meant as "paper", and its hidden RGB values are often black).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgclf.model.bundle import Preprocessing
from imgclf.model.images import (
    CorruptImageError,
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    error_reason,
    open_image,
)

# EXIF orientation tag values -> the transpose that makes the picture upright.
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112
# Resize by an integer box reduction first while the remaining scale stays >= this factor. For a
# 12 MP picture that is not a JPEG (no draft mode) this took 19 ms instead of 35, and the input
# moved by a quarter of a grey level on average (3 at most).
_REDUCING_GAP = 3.0


def preprocess(data: bytes, config: Preprocessing, limits: ImageLimits) -> np.ndarray:
    """Decode and prepare one image: a C-contiguous float32 array of shape (3, size, size).

    Raises only :class:`ImageError` subclasses, whatever the bytes hold.
    """
    try:
        image = decode_rgb(data, max(config.resize, config.input_size), limits)
        return to_tensor(image, config)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"The image is too large: {error}") from None
    except MemoryError:
        raise ImageTooLargeError("The image is too large to decode.") from None
    except Exception as error:  # a hostile file must never escape as a crash
        raise CorruptImageError(error_reason(error)) from None


def decode_rgb(
    data: bytes, min_side: int, limits: ImageLimits, *, draft: bool = True
) -> Image.Image:
    """Decode an upright RGB image whose shorter side is at least ``min_side`` (when it was).

    ``draft=False`` decodes JPEGs at full size (for benchmarks and comparisons).
    """
    image = open_image(data, limits)
    if draft and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    image.load()
    # Animated GIF / WebP: Image.open positions on the first frame, which is what we classify.
    orientation = _orientation(image)
    if image.mode in _HIGH_DEPTH:
        # To 8 bits and near the size the model needs before anything else: through float64,
        # a 7000x7000 16-bit PNG of 95 KB took 1.2 GB and 3 s; this way 150 MB and 0.7 s.
        image = _reduce(_high_depth_to_l(image), min_side)
    image = _to_rgb(image)
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    return image


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation, or None; damaged EXIF data is ignored, not fatal to the picture."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except Exception:  # Pillow's EXIF parser raises a variety of errors
        return None
    return value if isinstance(value, int) else None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _eight_bit_tables() -> dict[bool, np.ndarray]:
    """Lookup tables from 16-bit values to 8 bits: scaled (for values above 255) or kept."""
    values = np.arange(65536, dtype=np.float64)
    return {
        True: (values * (255.0 / 65535.0)).round().astype(np.uint8),
        False: np.minimum(values, 255).astype(np.uint8),
    }


_HIGH_DEPTH = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_EIGHT_BITS = _eight_bit_tables()
# Rows converted at a time from high depth to 8 bits: about a million pixels.
_BAND_PIXELS = 1 << 20


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit) greyscale to 8 bits by scaling the range, not by clipping at 255.

    A band of rows at a time, through a lookup table: the only copy of the whole picture is the
    8-bit result. The same values as ``round(value * 255 / 65535)`` in float64.
    """
    highest = image.getextrema()[1]
    table = _EIGHT_BITS[not isinstance(highest, tuple) and highest > 255]
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    grey = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if band.dtype != np.uint16:  # mode I (int32) or F (float32)
            band = np.clip(np.rint(np.nan_to_num(band)), 0, 65535).astype(np.uint16)
        grey[top : top + rows] = table[band]
    return Image.fromarray(grey)


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Shrink by a whole factor while the shorter side stays ``_REDUCING_GAP`` times
    ``min_side``, as ``to_tensor``'s resize would first."""
    factor = int(min(image.size) / (min_side * _REDUCING_GAP))
    return image.reduce(factor) if factor > 1 else image


def to_tensor(image: Image.Image, config: Preprocessing) -> np.ndarray:
    """Resize the shorter side, centre crop, normalise, HWC -> CHW."""
    size = config.input_size
    short = max(config.resize, size)
    width, height = image.size
    scale = short / min(width, height)
    resized_w = max(size, round(width * scale))
    resized_h = max(size, round(height * scale))
    left = (resized_w - size) // 2
    top = (resized_h - size) // 2
    # Resize only the crop window: the same pixels as "resize then crop" (the filter still reads
    # source pixels beyond the window), without computing the ones that are thrown away.
    sx, sy = width / resized_w, height / resized_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    image = image.resize(
        (size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=_REDUCING_GAP
    )
    array = np.asarray(image, dtype=np.float32)
    array -= config.mean
    array *= 1.0 / config.std
    return np.ascontiguousarray(array.transpose(2, 0, 1))
