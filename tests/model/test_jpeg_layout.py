"""The JPEG marker walk: scans counted as libjpeg would decode them, the coefficient buffer of
multi-scan files, and no error whatever the bytes."""

from __future__ import annotations

import io
import random
import struct

import pytest
from model_helpers import encode
from PIL import Image

from imgclf.model.jpeg_layout import TooManySegments, read_jpeg_layout
from tests.security.hostile_files import jpeg_with_repeated_scans

LIMIT = 100


def photo(dog_image: Image.Image, **options: object) -> bytes:
    return encode(dog_image.resize((640, 480)), "JPEG", quality=90, **options)


def test_a_baseline_jpeg_is_one_scan_decoded_without_a_coefficient_buffer(
    dog_bytes: bytes,
) -> None:
    layout = read_jpeg_layout(dog_bytes, LIMIT)
    assert (layout.scans, layout.multi_scan, layout.coefficient_bytes) == (1, False, 0)


def test_the_walk_of_a_sequential_jpeg_ends_at_its_one_scan(dog_bytes: bytes) -> None:
    # libjpeg decodes such a file in that scan and refuses any other after it.
    end = len(dog_bytes) - 2
    extra = dog_bytes[:end] + dog_bytes[dog_bytes.rindex(b"\xff\xda") : end] * 500 + b"\xff\xd9"
    assert read_jpeg_layout(extra, LIMIT).scans == 1
    with pytest.raises(OSError, match="broken data stream"):
        Image.open(io.BytesIO(extra)).load()


def test_a_progressive_jpeg_has_ten_scans_and_two_bytes_per_coefficient(
    dog_image: Image.Image,
) -> None:
    subsampled = read_jpeg_layout(photo(dog_image, progressive=True), LIMIT)
    full_colour = read_jpeg_layout(photo(dog_image, progressive=True, subsampling=0), LIMIT)
    grey = read_jpeg_layout(encode(dog_image.convert("L"), "JPEG", progressive=True), LIMIT)

    assert (subsampled.scans, subsampled.multi_scan) == (10, True)
    # 4:2:0: luma at every pixel, each chroma at a quarter of them; 2 bytes a coefficient.
    assert subsampled.coefficient_bytes == 640 * 480 * (1 + 0.25 + 0.25) * 2
    assert full_colour.coefficient_bytes == 640 * 480 * 3 * 2
    assert grey.scans == 6


def test_counting_stops_past_the_limit_however_many_scans_follow() -> None:
    data = jpeg_with_repeated_scans(200, 5_000)
    assert data.count(b"\xff\xda") == 5_000
    assert read_jpeg_layout(data, LIMIT).scans == LIMIT + 1
    assert read_jpeg_layout(data, 10_000).scans == 5_000


def test_scan_markers_inside_other_segments_are_not_scans(dog_bytes: bytes) -> None:
    # An APP2 segment full of FF DA, as an embedded thumbnail or a hostile payload may hold.
    payload = b"\xff\xda" * 30_000
    segment = b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload
    data = dog_bytes[:2] + segment + dog_bytes[2:]
    assert Image.open(io.BytesIO(data)).size == (729, 486)
    assert read_jpeg_layout(data, LIMIT).scans == 1


def test_bytes_between_segments_are_skipped_as_libjpeg_does(dog_image: Image.Image) -> None:
    data = photo(dog_image, progressive=True)
    first_scan = data.find(b"\xff\xda")
    padded = data[:first_scan] + b"\x00garbage\x00" + data[first_scan:]
    assert read_jpeg_layout(padded, LIMIT).scans == 10


def test_damaged_and_random_bytes_get_a_layout_or_a_clear_refusal(dog_image: Image.Image) -> None:
    data = photo(dog_image, progressive=True)
    rng = random.Random(7)
    cases = [data[:cut] for cut in range(0, len(data), 101)]
    for _ in range(200):
        scribbled = bytearray(data)
        for _ in range(20):
            scribbled[rng.randrange(len(data))] = rng.choice([0xFF, 0xDA, 0x00, 0xC2, 0xD9])
        cases.append(bytes(scribbled))
    cases += [rng.randbytes(2_000) for _ in range(50)]
    cases += [b"", b"\xff", b"\xff\xd8\xff", b"\xff\xd8\xff\xc2\x00", b"\xff\xd8\xff\xda\x00\x00"]
    refused = 0
    for case in cases:
        try:
            layout = read_jpeg_layout(case, LIMIT)
        except TooManySegments:  # its own refusal: junk between headers, where Pillow is slow
            refused += 1
            continue
        assert 0 <= layout.scans <= LIMIT + 1
        assert layout.coefficient_bytes >= 0
    assert refused < len(cases) // 4


@pytest.mark.parametrize("length", [0, 1])
def test_a_segment_length_below_two_still_moves_on(length: int, dog_bytes: bytes) -> None:
    data = dog_bytes[:2] + b"\xff\xe3" + struct.pack(">H", length) + dog_bytes[2:]
    assert read_jpeg_layout(data, LIMIT).scans == 1
