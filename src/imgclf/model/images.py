"""Image validation: what the API checks per upload and the worker before decoding. Pillow only.

Every refusal is an :class:`ImageError` subclass whose ``str()`` is a message for the user and
whose ``status_code`` is the HTTP status the API answers with. The checks bound what a decode
costs (bytes, pixels, the memory the decoder fills, JPEG scans) from the headers alone, and the
worker decodes under a time limit as well, for whatever cost they do not foresee.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from PIL import Image, ImageFile, UnidentifiedImageError

from imgclf.model.image_end import (
    PNG_SIGNATURE,
    EndNotFound,
    check_gif_prelude,
    check_png_prelude,
    image_end,
)
from imgclf.model.jpeg_layout import JpegLayout, TooManySegments, read_jpeg_layout

if TYPE_CHECKING:
    from imgclf.settings import Settings

SUPPORTED_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"})
# The Pillow decoders we let near the bytes. A multi-picture JPEG (as phones write) opens through
# the JPEG decoder with format "MPO".
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
# Bytes a picture may hold after its end (camera trailers, padding) before what follows is
# cut off: a 1x1 picture with 20 MB appended would otherwise be stored as an image.
TRAILING_SLACK_BYTES = 64 * 1024


# Pillow decodes run-length compressed BMPs in Python, and pads a row that ends early one pixel
# at a time without reading the file, so the decoding time limit (checked as the decoder reads)
# cannot stop it: a 1 KB BMP of 49.9 megapixels took 8 s and held a worker's lane for 13.
# About 125 ns a pixel here: 4 megapixels, half a second at worst.
MAX_RLE_BMP_PIXELS = 4_000_000


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
    """Too many bytes or pixels, or too costly to decode."""

    status_code: ClassVar[int] = 413


class DecodeTimeoutError(ImageTooLargeError):
    """Decoding ran past its time limit: the image is refused for good, never retried."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(
            f"Decoding the image took longer than the {limit_s:g} s limit; it was set aside."
        )


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    # The largest buffer the decoder fills: 50 MP at the 4 bytes Pillow keeps per RGB pixel.
    max_decoded_bytes: int = 200_000_000
    # A progressive JPEG has about 10 scans; each costs a pass over the whole picture.
    max_jpeg_scans: int = 100
    decode_timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_decoded_bytes=settings.max_decoded_bytes,
            max_jpeg_scans=settings.max_jpeg_scans,
            decode_timeout_s=settings.decode_timeout_s,
        )


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


def check_decoded_bytes(decoded: int, detail: str, limits: ImageLimits) -> None:
    if decoded > limits.max_decoded_bytes:
        raise ImageTooLargeError(
            f"Decoding the image needs {decoded / 1e6:.0f} MB ({detail}); "
            f"the limit is {limits.max_decoded_bytes / 1e6:.0f} MB."
        )


def stored_bytes_per_pixel(mode: str) -> int:
    """What Pillow keeps per pixel in memory: RGB is padded to four bytes."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


# Bytes fed to the JPEG decoder per call, between two looks at the clock, for multi-scan files:
# each scan costs a pass over the whole picture, however few bytes it takes (75 bytes, 25 ms at
# 7000x7000), so 1 KB holds at most a few hundred ms of work. Other files keep Pillow's 64 KB:
# their cost follows their pixels. A 12 MP progressive JPEG decodes as fast either way.
_MULTI_SCAN_READ_BYTES = 1024
# What libjpeg's progressive mode writes for a colour picture: a multi-scan JPEG may take as
# many passes as the largest picture allowed would in them.
SCANS_AT_THE_PIXEL_LIMIT = 10


def check_decoding_cost(
    image: ImageFile.ImageFile,
    data: bytes,
    limits: ImageLimits,
    layout: JpegLayout | None = None,
) -> None:
    """Refuse what would take too much memory or too many JPEG scans to decode, and feed
    multi-scan JPEGs to the decoder in small pieces, so that its time limit is kept.
    ``layout``: the JPEG's, when ``check_structure`` has read it already."""
    width, height = image.size
    per_pixel = stored_bytes_per_pixel(image.mode)
    decoded = width * height * per_pixel
    detail = f"{width}x{height} {image.mode} pixels of {per_pixel} bytes"
    if image.tile and image.tile[0][0] == "bmp_rle" and width * height > MAX_RLE_BMP_PIXELS:
        raise ImageTooLargeError(
            f"The BMP is run-length compressed ({width}x{height} pixels), which decodes slowly; "
            f"such BMPs may have at most {MAX_RLE_BMP_PIXELS / 1e6:g} megapixels. Save the "
            "picture as PNG or JPEG."
        )
    if image.format in ("JPEG", "MPO"):
        layout = layout or _jpeg_layout(data, limits)
        if layout.coefficient_bytes > decoded:
            decoded = layout.coefficient_bytes
            detail = f"the {layout.scans} scans of a {width}x{height} JPEG, decoded as a whole"
        if layout.multi_scan:
            image.decodermaxblock = _MULTI_SCAN_READ_BYTES
    check_decoded_bytes(decoded, detail, limits)
    if layout is not None and layout.multi_scan:
        _check_scan_passes(layout.scans, width, height, limits)


def _check_scan_passes(scans: int, width: int, height: int, limits: ImageLimits) -> None:
    """Each scan of a multi-scan JPEG is a pass over the whole picture: a 100 KB file of 100
    scans over 25 megapixels took 4.6 s to decode, every other image in its batch waiting. As
    many passes as the largest picture allowed takes in libjpeg's 10 progressive scans, no more
    (that picture, 49 megapixels, decoded in 2.1 s; 100 scans over 2 megapixels in 0.9)."""
    allowed = limits.max_pixels * SCANS_AT_THE_PIXEL_LIMIT
    if scans * width * height > allowed:
        raise ImageTooLargeError(
            f"The JPEG's {scans} scans (progressive passes) over its {width}x{height} pixels "
            f"are more decoding than {SCANS_AT_THE_PIXEL_LIMIT} scans of the largest picture "
            f"allowed ({limits.max_pixels / 1e6:g} megapixels); save it again as a baseline "
            "JPEG or with fewer scans."
        )


class _TimedBytes(io.BytesIO):
    """The upload as Pillow's decoders pull it: each pull past the time limit raises instead.

    Decoding runs in C and cannot be interrupted from Python, but Pillow's decoders work
    through the file a piece at a time and come back for each piece, so the limit holds to
    within one piece of work, and the decoder cleans up as the error passes through it.
    """

    def __init__(self, data: bytes, limit_s: float) -> None:
        super().__init__(data)
        self._limit_s = limit_s
        self._deadline = time.monotonic() + limit_s

    def read(self, size: int | None = -1, /) -> bytes:
        if time.monotonic() > self._deadline:
            raise DecodeTimeoutError(self._limit_s)
        return super().read(size)


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (header only, nothing decoded yet) and check size, format, pixel count and decoding
    cost. Loading the result raises :class:`DecodeTimeoutError` past the time limit."""
    check_size(len(data), limits)
    layout = check_structure(data, limits)
    try:
        image = Image.open(_TimedBytes(data, limits.decode_timeout_s), formats=SUPPORTED_FORMATS)
    except ImageError:  # out of time already, while reading the header
        raise
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
    check_decoding_cost(image, data, limits, layout)
    return image


def _jpeg_layout(data: bytes, limits: ImageLimits) -> JpegLayout:
    """The JPEG's layout, or its refusal for too many scans or segments."""
    try:
        layout = read_jpeg_layout(data, limits.max_jpeg_scans)
    except TooManySegments as error:
        raise _too_complex(error) from None
    if layout.scans > limits.max_jpeg_scans:
        raise ImageTooLargeError(
            f"The JPEG has more than {limits.max_jpeg_scans} scans (progressive passes over "
            f"the picture); the limit is {limits.max_jpeg_scans}."
        )
    return layout


def check_structure(data: bytes, limits: ImageLimits) -> JpegLayout | None:
    """Walk, within limits, what Pillow's header parsers walk one piece at a time in Python: a
    JPEG's marker segments (up to its first scan, as Pillow does), a PNG's chunks, the blocks
    before a GIF's picture. 20 MB of empty ones took them seconds (and the limits of our own
    walks were not there either). A JPEG's layout is returned for ``check_decoding_cost``."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg_layout(data, limits)
    try:
        if data.startswith(PNG_SIGNATURE):
            check_png_prelude(data)
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            check_gif_prelude(data)
    except TooManySegments as error:
        raise _too_complex(error) from None
    return None


def _too_complex(error: TooManySegments) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"The image is refused: {error} A camera's or an editor's file has far fewer; save the "
        "picture again to send it."
    )


def inspect_image(data: bytes, limits: ImageLimits) -> str:
    """Cheap upload check (no pixel decoding): the Pillow format name, e.g. "JPEG", or an error.

    The full decode happens later, in the worker, which reports truncated data then.
    """
    image = open_image(data, limits)
    # MPO is a JPEG with extra pictures appended; callers only need to know it is a JPEG.
    return "JPEG" if image.format == "MPO" else str(image.format)


def picture_bytes(data: bytes, image_format: str) -> bytes:
    """The upload without what follows its picture, where that is more than
    ``TRAILING_SLACK_BYTES``: decoders never read it, so it is not worth storing. A phone's
    motion photo carries its video there, a hostile upload megabytes of anything; an ordinary
    file is kept byte for byte."""
    try:
        end = image_end(data, image_format)
    except TooManySegments as error:
        raise _too_complex(error) from None
    except EndNotFound as error:
        raise CorruptImageError(str(error)) from None
    if end is not None and len(data) - end > TRAILING_SLACK_BYTES:
        return data[:end]
    return data


def error_reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if text.endswith(".") else f"{text}."
