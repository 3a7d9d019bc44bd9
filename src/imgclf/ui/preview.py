"""Previews of uploads: a small picture from a bounded decode, or the reason there is none.

The page decodes whatever a signed-in user uploads. Handed the file itself, ``st.image``
decodes all of it to scale it down (a 13000x13000 PNG: 2.7 s and 700 MB), so previews are made
here instead: under the limits the API applies by default (bytes, pixels, decoded bytes, JPEG
scans, decoding time), JPEGs scaled down by the decoder, and only a thumbnail handed on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from imgclf.model.images import (
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageError,
    open_image,
)

# Twice the widest preview on the page, for high-density screens.
PREVIEW_SIDE = 512
LIMITS = ImageLimits()
# Also what a HEIC or TIFF photo gets: an image, but not one the model is given.
NOT_AN_IMAGE = (
    "This file is not a picture the model can read: use a JPEG, PNG, GIF, WebP or BMP file."
)
DAMAGED = "The image is damaged or incomplete, so it cannot be shown."


@dataclass(frozen=True)
class Preview:
    """A thumbnail to show (JPEG, or PNG when transparent), or why there is none (too costly
    to decode, damaged, or not an image at all: ``not_an_image``)."""

    picture: bytes | None = None
    refusal: str | None = None
    not_an_image: bool = False


def make_preview(data: bytes, side: int = PREVIEW_SIDE) -> Preview:
    try:
        image = open_image(data, LIMITS)
        image.thumbnail((side, side))  # JPEGs: draft mode, scaled while decoded
        return Preview(picture=_encode(_upright(image)))
    except ImageTooLargeError as error:  # too many bytes, pixels or scans, or too slow
        return Preview(refusal=str(error))
    except (UnsupportedImageError, UnidentifiedImageError):
        return Preview(refusal=NOT_AN_IMAGE, not_an_image=True)
    except Exception:  # truncated or damaged: Pillow raises many kinds of errors
        return Preview(refusal=DAMAGED)


def _upright(image: Image.Image) -> Image.Image:
    """Turned as its EXIF orientation says (a browser would), damaged EXIF ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow's EXIF parser raises a variety of errors
        return image


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image.convert("RGBA").save(buffer, format="PNG")
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
