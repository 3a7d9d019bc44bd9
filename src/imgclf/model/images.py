"""Image validation: what the API checks per upload and the worker before decoding. Pillow only.

Every refusal is an :class:`ImageError` subclass whose ``str()`` is a message for the user and
whose ``status_code`` is the HTTP status the API answers with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from imgclf.settings import Settings

SUPPORTED_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
# The Pillow decoders we let near the bytes. A multi-picture JPEG (as phones write) opens through
# the JPEG decoder with format "MPO".
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")


class ImageError(ValueError):
    """An image we refuse; ``str(error)`` is the message for the user."""

    status_code: ClassVar[int] = 400


class UnsupportedImageError(ImageError):
    """Not an image, or a format we do not decode."""

    def __init__(self, message: str = "File type is not supported.") -> None:
        super().__init__(message)


class CorruptImageError(ImageError):
    """A supported format whose bytes do not decode (truncated, damaged, empty)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"The image could not be decoded: {reason}")


class ImageTooLargeError(ImageError):
    """Too many bytes or too many pixels."""

    status_code: ClassVar[int] = 413


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)


def check_extension(filename: str) -> str:
    """The file name's extension, lowercased (".jpg"), or :class:`UnsupportedImageError`."""
    dot = filename.rfind(".")
    extension = filename[dot:].lower() if dot >= 0 else ""
    if extension not in SUPPORTED_EXTENSIONS:
        raise UnsupportedImageError()
    return extension


def check_size(size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise CorruptImageError("the file is empty.")
    if size > limits.max_bytes:
        raise ImageTooLargeError(
            f"The file is {size / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB."
        )


def check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    pixels = width * height
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"The image is {pixels / 1e6:.1f} megapixels; "
            f"the limit is {limits.max_pixels / 1e6:.1f} megapixels."
        )


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only, nothing decoded yet) and check size, format and pixel count."""
    check_size(len(data), limits)
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"The image is too large: {error}") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError() from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as error:
        # Pillow's parsers raise a mix of these for damaged headers.
        raise CorruptImageError(error_reason(error)) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise CorruptImageError("the image has no pixels.")
    check_pixels(width, height, limits)
    return image


def inspect_image(data: bytes, limits: ImageLimits) -> str:
    """Cheap upload check (no pixel decoding): the Pillow format name, e.g. "JPEG", or an error.

    The full decode happens later, in the worker, which reports truncated data then.
    """
    image = open_image(data, limits)
    # MPO is a JPEG with extra pictures appended; callers only need to know it is a JPEG.
    return "JPEG" if image.format == "MPO" else str(image.format)


def error_reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if text.endswith(".") else f"{text}."
