"""What a JPEG's markers say about the cost of decoding it, read without decoding anything.

libjpeg decodes every scan (SOS segment) in a file, and each scan is a pass over all the blocks
of its components however few bytes it takes: a 75-byte scan of a 7000x7000 picture costs
about 25 ms, so ten thousand of them in a 1 MB file cost minutes, draft mode or not. A file of
more than one scan (progressive, or one scan per component) is also decoded into a buffer that
holds every DCT coefficient of the picture (2 bytes each) before a single pixel comes out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The next marker, as libjpeg finds it: 0xFF followed by anything but a stuffed zero (FF 00 in
# entropy-coded data), a restart marker (D0-D7, inside a scan) or another fill byte (FF).
NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Start of frame: C0-CF except DHT (C4), JPG (C8) and DAC (CC); C2, C6, CA and CE are progressive.
_START_OF_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_START_OF_SCAN, _START_OF_IMAGE, _END_OF_IMAGE, _TEMPORARY = 0xDA, 0xD8, 0xD9, 0x01
# Marker segments (and fill bytes, and pictures of an MPO) a walk follows before it refuses the
# file. Encoders write tens, a few hundred with every scan of a progressive file and an ICC
# profile in pieces; 20 MB of empty comment segments are five million, seconds of Python.
MAX_JPEG_SEGMENTS = 10_000
# Bytes between the segments before the first scan (fill bytes, junk): Pillow's header parser
# skips them one at a time in Python (20 MB of 0xFF took it past the 5 s limit); encoders
# write none.
MAX_JPEG_FILLER_BYTES = 4096


class TooManySegments(ValueError):
    """More pieces of structure than any encoder writes: a JPEG's marker segments or filler
    bytes, a PNG's chunks, a GIF's blocks. Refused as too costly to read, not as damaged."""

    def __init__(
        self,
        detail: str = f"more than {MAX_JPEG_SEGMENTS:,} marker segments",
        *,
        file_kind: str = "JPEG",
    ) -> None:
        super().__init__(f"the {file_kind} has {detail}.")


@dataclass(frozen=True, slots=True)
class JpegLayout:
    scans: int
    multi_scan: bool
    coefficient_bytes: int  # the whole-picture coefficient buffer of a multi-scan file, else 0


def read_jpeg_layout(data: bytes, max_scans: int) -> JpegLayout:
    """Walk the marker segments of the first picture in ``data`` (up to its EOI), or until more
    than ``max_scans`` scans are seen; TooManySegments past ``MAX_JPEG_SEGMENTS``.

    Lenient where libjpeg is: bytes between segments are skipped to the next marker, and a
    damaged or truncated file ends the walk (the decoder then reports what is wrong with it).
    """
    scans = 0
    progressive = False
    coefficients = 0
    components = 0  # 0 until the frame header is seen
    match = NEXT_MARKER.search(data, 2)
    expected, filler = 2, 0  # where the next segment should start; bytes skipped before it
    for _ in range(MAX_JPEG_SEGMENTS):
        if match is None:
            break
        position = match.start()
        if not scans:
            filler += position - expected
            if filler > MAX_JPEG_FILLER_BYTES:
                raise TooManySegments(
                    f"more than {MAX_JPEG_FILLER_BYTES:,} bytes between its headers"
                )
        marker = data[position + 1]
        if marker == _END_OF_IMAGE:
            break
        if marker in (_START_OF_IMAGE, _TEMPORARY):  # no length field
            expected = position + 2
            match = NEXT_MARKER.search(data, expected)
            continue
        length = int.from_bytes(data[position + 2 : position + 4])
        if marker == _START_OF_SCAN:
            scans += 1
            in_scan = data[position + 4] if position + 4 < len(data) else 0
            # A sequential file whose first scan holds every component is decoded as it is
            # read, in that one scan: libjpeg refuses any scan after it, so the walk ends here.
            single_scan = scans == 1 and not progressive and in_scan == components > 0
            if single_scan or scans > max_scans:
                break
        elif marker in _START_OF_FRAME and not components:
            progressive = marker in _PROGRESSIVE
            frame = data[position + 4 : position + 2 + length]
            components = frame[5] if len(frame) > 5 else 0
            coefficients = _coefficients(frame)
        # After a scan's header the search also skips its entropy-coded data.
        expected = position + 2 + max(length, 2)
        match = NEXT_MARKER.search(data, expected)
    else:
        raise TooManySegments()
    multi_scan = progressive or scans > 1
    return JpegLayout(scans, multi_scan, 2 * coefficients if multi_scan else 0)


def _coefficients(frame: bytes) -> int:
    """DCT coefficients of all components, as libjpeg pads them (to whole MCUs)."""
    if len(frame) < 6:
        return 0
    height = int.from_bytes(frame[1:3])
    width = int.from_bytes(frame[3:5])
    # Each component: id, sampling factors (4 bits horizontal, 4 bits vertical), table.
    sampling = [
        (max(1, frame[at] >> 4), max(1, frame[at] & 0x0F)) for at in range(7, len(frame), 3)
    ][: frame[5]]
    if not sampling:
        return 0
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    total = 0
    for h, v in sampling:
        blocks_wide = _round_up(math.ceil(width * h / (8 * h_max)), h)
        blocks_high = _round_up(math.ceil(height * v / (8 * v_max)), v)
        total += blocks_wide * blocks_high * 64
    return total


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
