"""The cheap per-upload checks the API makes: extension, byte size, format, pixel count, and
what decoding would cost (memory, JPEG scans)."""

from __future__ import annotations

import struct
import zlib

import pytest
from model_helpers import encode
from PIL import Image

from imgclf.model.images import (
    CorruptImageError,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageError,
    check_extension,
    inspect_image,
    picture_bytes,
)
from imgclf.model.preprocessing import decode_rgb
from imgclf.settings import Settings
from tests.security.hostile_files import flat_png, jpeg_with_repeated_scans, rle_bmp


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression-bomb shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # a few rows; nothing reads further
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)


@pytest.mark.parametrize(
    ("name", "extension"),
    [
        ("dog.jpeg", ".jpeg"),
        ("DOG.JPG", ".jpg"),
        ("a.b.PNG", ".png"),
        ("x.gif", ".gif"),
        ("x.webp", ".webp"),
        ("x.Bmp", ".bmp"),
    ],
)
def test_supported_extensions_come_back_lowercased(name: str, extension: str) -> None:
    assert check_extension(name) == extension


@pytest.mark.parametrize("name", ["notes.txt", "photo.tiff", "jpg", "photo", "photo.jpg.exe", ""])
def test_other_extensions_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedImageError, match=r"^File type is not supported\.$") as caught:
        check_extension(name)
    assert caught.value.status_code == 400


def test_inspect_names_the_format_of_each_supported_kind(dog_image: Image.Image) -> None:
    small = dog_image.resize((64, 43))
    limits = ImageLimits()
    assert inspect_image(encode(small, "JPEG"), limits) == "JPEG"
    assert inspect_image(encode(small, "PNG"), limits) == "PNG"
    assert inspect_image(encode(small.convert("P"), "GIF"), limits) == "GIF"
    assert inspect_image(encode(small, "WEBP"), limits) == "WEBP"
    assert inspect_image(encode(small, "BMP"), limits) == "BMP"


def test_the_content_decides_not_the_name(dog_image: Image.Image) -> None:
    # PNG bytes uploaded as photo.jpg are a PNG; TIFF is a real image format we do not accept.
    assert inspect_image(encode(dog_image, "PNG"), ImageLimits()) == "PNG"
    with pytest.raises(UnsupportedImageError):
        inspect_image(encode(dog_image, "TIFF"), ImageLimits())


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file named photo.jpg\n", bytes(range(256)) * 10, b"\xff\xd8"],
    ids=["text", "random", "two-bytes-of-jpeg-magic"],
)
def test_non_images_are_unsupported_or_corrupt(data: bytes) -> None:
    with pytest.raises((UnsupportedImageError, CorruptImageError)) as caught:
        inspect_image(data, ImageLimits())
    assert caught.value.status_code == 400


def test_an_empty_file_is_refused_as_undecodable() -> None:
    with pytest.raises(CorruptImageError, match="could not be decoded: the file is empty"):
        inspect_image(b"", ImageLimits())


def test_too_many_bytes_is_413_with_the_limit(dog_bytes: bytes) -> None:
    with pytest.raises(ImageTooLargeError, match=r"the limit is 0\.0 MB") as caught:
        inspect_image(dog_bytes, ImageLimits(max_bytes=1000))
    assert caught.value.status_code == 413


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_100_megapixel_header_is_refused_before_any_decoding() -> None:
    bomb = png_header_only(10_000, 10_000)
    assert len(bomb) < 1000
    with pytest.raises(ImageTooLargeError) as caught:
        inspect_image(bomb, ImageLimits())
    assert str(caught.value) == "The image is 100.0 megapixels; the limit is 50.0 megapixels."
    assert caught.value.status_code == 413


def test_pillows_own_bomb_guard_also_comes_back_typed() -> None:
    # Above twice Pillow's MAX_IMAGE_PIXELS, Image.open raises before we look at the size.
    with pytest.raises(ImageTooLargeError):
        inspect_image(png_header_only(20_000, 10_000), ImageLimits(max_pixels=10**9))


def test_limits_come_from_settings() -> None:
    settings = Settings(
        max_upload_bytes=123,
        max_image_pixels=456,
        max_decoded_bytes=789,
        max_jpeg_scans=12,
        decode_timeout_s=3.5,
    )
    assert ImageLimits.from_settings(settings) == ImageLimits(
        max_bytes=123,
        max_pixels=456,
        max_decoded_bytes=789,
        max_jpeg_scans=12,
        decode_timeout_s=3.5,
    )


def test_a_jpeg_of_more_scans_than_the_limit_is_413_naming_it() -> None:
    assert inspect_image(jpeg_with_repeated_scans(300, 100), ImageLimits()) == "JPEG"
    with pytest.raises(ImageTooLargeError) as caught:
        inspect_image(jpeg_with_repeated_scans(300, 101), ImageLimits())
    assert str(caught.value) == (
        "The JPEG has more than 100 scans (progressive passes over the picture); the limit is 100."
    )
    assert caught.value.status_code == 413


def test_a_run_length_bmp_past_four_megapixels_is_413_and_one_below_decodes_in_time() -> None:
    """Pillow pads rows that end early one pixel at a time in Python, out of the time limit's
    reach: the worst such BMP within the cap still decodes well inside the limit."""
    limits = ImageLimits(decode_timeout_s=5.0)
    with pytest.raises(ImageTooLargeError) as caught:
        inspect_image(rle_bmp(2001, 2000, rows_end_early=True), limits)
    assert str(caught.value).startswith("The BMP is run-length compressed (2001x2000 pixels)")
    assert caught.value.status_code == 413

    worst = rle_bmp(2000, 2000, rows_end_early=True)
    assert inspect_image(worst, limits) == "BMP"
    assert decode_rgb(worst, 224, limits).size == (2000, 2000)


@pytest.mark.parametrize(
    ("bit_depth", "colour_type", "channels", "bytes_per_pixel"),
    [(8, 0, 1, 1), (16, 0, 1, 2), (8, 2, 3, 4), (8, 6, 4, 4), (8, 4, 2, 4)],
    ids=["L", "I;16", "RGB", "RGBA", "LA"],
)
def test_decoded_bytes_count_the_bytes_of_each_pixel_mode(
    bit_depth: int, colour_type: int, channels: int, bytes_per_pixel: int
) -> None:
    data = flat_png(1_000, 500, bit_depth, colour_type, channels)
    decoded = 500_000 * bytes_per_pixel
    assert inspect_image(data, ImageLimits(max_decoded_bytes=decoded)) == "PNG"
    with pytest.raises(ImageTooLargeError, match=r"the limit is \d+ MB\.$") as caught:
        inspect_image(data, ImageLimits(max_decoded_bytes=decoded - 1))
    assert f"pixels of {bytes_per_pixel} bytes" in str(caught.value)


def test_a_progressive_jpeg_counts_its_coefficient_buffer(dog_image: Image.Image) -> None:
    # 640x480 without chroma subsampling: 3 components of 2-byte coefficients at every pixel.
    data = encode(dog_image.resize((640, 480)), "JPEG", progressive=True, subsampling=0)
    assert inspect_image(data, ImageLimits(max_decoded_bytes=640 * 480 * 6)) == "JPEG"
    with pytest.raises(ImageTooLargeError, match="the 10 scans of a 640x480 JPEG"):
        inspect_image(data, ImageLimits(max_decoded_bytes=640 * 480 * 6 - 1))


APPENDED = b"\0" * (2 * 2**20)


# Formats with one picture, and those with several pictures (frames) as well.
CUT_OFF = [("JPEG", 1), ("BMP", 1)] + [(kind, n) for kind in ("PNG", "GIF", "WEBP") for n in (1, 3)]


@pytest.mark.parametrize(("image_format", "frames"), CUT_OFF)
def test_megabytes_after_the_image_are_cut_off(
    dog_image: Image.Image, image_format: str, frames: int
) -> None:
    """Otherwise stored, and downloaded again: an account's quota of any file it likes."""
    small = dog_image.resize((48, 32))
    more = {"save_all": True, "append_images": [small.rotate(90)] * (frames - 1)}
    picture = encode(small, image_format, **(more if frames > 1 else {}))
    data = picture + APPENDED
    assert picture_bytes(data, inspect_image(data, ImageLimits())) == picture


def test_a_jpeg_without_its_end_marker_is_refused_even_padded_with_zeros(
    dog_bytes: bytes,
) -> None:
    # Pillow decodes this one: it stops once it has every pixel, whatever follows.
    with pytest.raises(CorruptImageError, match="no end marker"):
        picture_bytes(dog_bytes[:-2] + APPENDED, "JPEG")


def test_what_cameras_and_encoders_write_is_accepted(
    dog_image: Image.Image, dog_bytes: bytes
) -> None:
    small = dog_image.resize((160, 107))
    accepted = [
        dog_bytes + b"<html>a polyglot's few bytes</html>",
        dog_bytes + b"\0" * 60_000,  # padding a camera left
        encode(small, "JPEG", progressive=True),
        encode(small, "MPO", save_all=True, append_images=[small.rotate(90)]),  # two pictures
        encode(small, "PNG") + b"trailer",
        encode(small, "GIF", save_all=True, append_images=[small.rotate(90)], comment=b"hi"),
        encode(small, "WEBP", save_all=True, append_images=[small.rotate(90)]),
        encode(small, "WEBP", lossless=True) + b"\0" * 1000,
        encode(small, "BMP") + b"\0" * 1000,
    ]
    for data in accepted:
        assert picture_bytes(data, inspect_image(data, ImageLimits())) == data
