"""Previews of uploads: a small picture from a bounded decode, or the reason there is none.

The page decodes whatever a signed-in user uploads. Handed the file itself, ``st.image``
decodes all of it to scale it down (a 13000x13000 PNG: 2.7 s and 700 MB), so previews are made
here instead: under the limits the API applies by default (bytes, pixels, decoded bytes, JPEG
scans, decoding time), JPEGs scaled down by the decoder, and only a thumbnail handed on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from imgclf.model.images import ImageLimits, ImageTooLargeError, open_image

# Twice the widest preview on the page, for high-density screens.
PREVIEW_SIDE = 512
LIMITS = ImageLimits()


@dataclass(frozen=True)
class Preview:
    """A thumbnail to show (JPEG, or PNG when transparent), or why there is none: ``refusal``
    for a file too costly to decode, neither for one that is not a picture we read."""

    picture: bytes | None = None
    refusal: str | None = None


def make_preview(data: bytes) -> Preview:
    try:
        image = open_image(data, LIMITS)
        image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))  # JPEGs: draft mode, scaled while decoded
        return Preview(picture=_encode(_upright(image)))
    except ImageTooLargeError as error:  # too many bytes, pixels or scans, or too slow
        return Preview(refusal=str(error))
    except Exception:  # not an image, truncated: Pillow raises many kinds of errors
        return Preview()


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
