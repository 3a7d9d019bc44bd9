"""A corpus of hostile uploads, generated (nothing binary is checked in).

Each :class:`Hostile` is one multipart upload, built byte by byte so that file names with NUL
or ``../``, odd content types and missing headers really reach the server as written, and the
answers the API may give it: a clear refusal (400/413/422) or a correct classification.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

DOG_JPEG = Path(__file__).parents[1] / "data" / "dog.jpeg"
UNSUPPORTED = "File type is not supported."
UNDECODABLE = "could not be decoded"
TOO_LARGE = "limit"


@dataclass(frozen=True)
class Hostile:
    """An upload and what the API may answer: statuses, and for a refusal a phrase it must say."""

    id: str
    data: bytes
    filename: bytes | None = b"upload.png"
    content_type: bytes | None = b"image/png"
    statuses: frozenset[int] = frozenset({400})
    message: str | None = UNSUPPORTED  # checked on refusals only
    label: str | None = None  # checked on a 200
    extra: dict[str, str] = field(default_factory=dict)

    def multipart(self, boundary: str = "imgclf-hostile-boundary") -> tuple[bytes, str]:
        """The request body and its Content-Type header."""
        disposition = b'Content-Disposition: form-data; name="file"'
        if self.filename is not None:
            disposition += b'; filename="' + self.filename + b'"'
        headers = [disposition]
        if self.content_type is not None:
            headers.append(b"Content-Type: " + self.content_type)
        mark = boundary.encode()
        body = (
            b"--" + mark + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + self.data + b"\r\n"
            b"--" + mark + b"--\r\n"
        )
        return body, f"multipart/form-data; boundary={boundary}"


@cache
def dog_bytes() -> bytes:
    return DOG_JPEG.read_bytes()


@cache
def dog_image() -> Image.Image:
    with Image.open(DOG_JPEG) as image:
        return image.convert("RGB")


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


# PNG, by hand ----------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png(
    width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, *extra: bytes
) -> bytes:
    """A PNG from already-filtered scanlines (each starting with its filter byte)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + b"".join(extra)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims ``width`` x ``height`` greyscale pixels."""
    return png(width, height, 8, 0, b"\0" * (min(width, 4096) + 1) * 4)[:-12]


def png_16_bit_rgb(image: Image.Image) -> bytes:
    """48 bits per pixel, which Pillow cannot write itself: each 8-bit value times 257."""
    pixels = np.asarray(image, dtype=np.uint16) * 257
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png(width, height, 16, 2, rows)


def png_16_bit_grey(image: Image.Image) -> bytes:
    pixels = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    height, width = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png(width, height, 16, 0, rows)


def flat_png(width: int, height: int, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A PNG of zeros, compressed a row at a time (never the whole picture in memory)."""
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def png_with_text_bomb() -> bytes:
    """A small PNG carrying a zTXt chunk that inflates to 64 MB."""
    bomb = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 64 * 2**20, 9))
    return png(1, 1, 8, 0, b"\0\0", bomb)


# GIF -------------------------------------------------------------------------------------------


def gif_claiming(width: int, height: int) -> bytes:
    """A real 1x1 GIF whose logical screen claims ``width`` x ``height``."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def gif_with_frames(frames: int, size: int = 16) -> bytes:
    """An animated GIF of ``frames`` 1x1 frames, written by hand (Pillow would merge them)."""
    header = b"GIF89a" + struct.pack("<HHBBB", size, size, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\0\0\0"
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 1/100 s
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW: clear, pixel 0, end
    )
    return header + loop + frame * frames + b"\x3b"


# JPEG ------------------------------------------------------------------------------------------


def jpeg_claiming(width: int, height: int) -> bytes:
    """The dog JPEG with its frame header changed to claim ``width`` x ``height``."""
    data = bytearray(dog_bytes())
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = data.find(marker)
        if at > 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise AssertionError("no SOF marker in dog.jpeg")


@cache
def jpeg_with_repeated_scans(side: int, scans: int) -> bytes:
    """A grey progressive JPEG whose last scan (a 75-byte AC refinement at 7000x7000) comes
    again until the file has ``scans`` scans: libjpeg decodes every one, each a pass over the
    whole picture, draft mode or not."""
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True, quality=90)
    end = len(data) - 2  # the EOI marker
    last = data.rindex(b"\xff\xda")
    return data[:end] + data[last:end] * (scans - data.count(b"\xff\xda")) + data[end:]


def jpeg_444_progressive_claiming(width: int, height: int) -> bytes:
    """A small progressive JPEG without chroma subsampling whose frame header claims
    ``width`` x ``height``: decoding would hold 6 bytes of coefficients per pixel."""
    data = bytearray(encode(dog_image(), "JPEG", progressive=True, subsampling=0))
    at = data.find(b"\xff\xc2")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_empty_comments(count: int, *, before_scan: bool) -> bytes:
    """The dog JPEG with ``count`` empty comment segments (4 bytes each), before its frame or
    just before its end marker: each a step of Pillow's header parser or of our walks."""
    data, comments = dog_bytes(), b"\xff\xfe\x00\x02" * count
    return data[:2] + comments + data[2:] if before_scan else data[:-2] + comments + data[-2:]


def png_with_inflating_chunks(kind: bytes, count: int) -> bytes:
    """A small PNG with ``count`` chunks of ``kind`` (iCCP or zTXt) before its pixels, each 1 KB
    that Pillow inflates to 1 MB as it opens the file (its limit per chunk); a zTXt with an
    empty keyword is not counted against Pillow's limit on text either."""
    inflating = zlib.compress(b"\0" * 2**20, 9)
    header = b"profile\0\0" if kind == b"iCCP" else b"\0\0"
    data = encode(dog_image().resize((64, 43)), "PNG")
    at = 8 + 25  # after the signature and IHDR
    return data[:at] + png_chunk(kind, header + inflating) * count + data[at:]


def png_with_empty_chunks(count: int, *, after_pixels: bool = False) -> bytes:
    """A small PNG with ``count`` empty private chunks (12 bytes each) before its pixels, or
    after them (before IEND)."""
    data = encode(dog_image().resize((64, 43)), "PNG")
    at = len(data) - 12 if after_pixels else 8 + 25  # before IEND, or after the signature+IHDR
    return data[:at] + png_chunk(b"zzZz", b"") * count + data[at:]


def gif_with_stray_bytes(count: int) -> bytes:
    """A small GIF with ``count`` stray bytes before its picture, which Pillow skips one by one."""
    data = encode(dog_image().resize((64, 43)).convert("P"), "GIF")
    flags = data[10]
    at = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    return data[:at] + b"\x00" * count + data[at:]


def jpeg_with_segments(*segments: bytes) -> bytes:
    """The dog JPEG with APPn segments (marker + payload) inserted right after SOI."""
    data = dog_bytes()
    inserted = b"".join(
        segment[:2] + struct.pack(">H", len(segment) - 2 + 2) + segment[2:] for segment in segments
    )
    return data[:2] + inserted + data[2:]


def exif_segment(tiff: bytes) -> bytes:
    return b"\xff\xe1" + b"Exif\0\0" + tiff


def exif_loop_and_lies() -> bytes:
    """EXIF whose IFD points at itself, with a tag claiming two billion values past the end."""
    entries = [
        struct.pack(">HHII", 0x010E, 2, 0x7FFFFFFF, 0x7FFFFFF0),  # ImageDescription, far away
        struct.pack(">HHII", 0x8769, 4, 1, 8),  # the EXIF sub-IFD is IFD0 again
    ]
    ifd = struct.pack(">H", len(entries)) + b"".join(entries) + struct.pack(">I", 8)
    return b"MM\0\x2a" + struct.pack(">I", 8) + ifd


def exif_too_many_entries() -> bytes:
    """An IFD that says it has 65535 entries and holds one."""
    return b"II\x2a\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\0" * 12


def big_exif() -> bytes:
    """Nearly the 64 KB an APP1 segment can hold, in one description."""
    exif = Image.Exif()
    exif[0x010E] = "A" * 60_000
    return encode(dog_image(), "JPEG", exif=exif.tobytes(), quality=90)


def rle_bmp(width: int, height: int, *, rows_end_early: bool) -> bytes:
    """An 8-bit run-length compressed BMP: each row one long run of one colour, or (when
    ``rows_end_early``) one pixel and an end of line, which Pillow pads one pixel at a time."""
    if rows_end_early:
        row = b"\x01\x05\x00\x00"
    else:
        runs, left = [], width
        while left > 0:
            runs.append(bytes([min(255, left), 5]))
            left -= min(255, left)
        row = b"".join(runs) + b"\x00\x00"
    pixels = row * height + b"\x00\x01"  # end of bitmap
    palette = bytes(4 * 256)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def scribbled(data: bytes, start: float, length: int) -> bytes:
    """``length`` bytes in the middle replaced by a pattern, lengths and markers left alone."""
    at = int(len(data) * start)
    return data[:at] + bytes((at + i) * 37 % 251 for i in range(length)) + data[at + length :]


def png_with_bad_crc(image: Image.Image) -> bytes:
    data = bytearray(encode(image, "PNG"))
    at = data.find(b"IDAT") + 20
    data[at] ^= 0xFF
    return bytes(data)


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.sh", "#!/bin/sh\necho owned\n")
    return buffer.getvalue()


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
PHP = b"<?php system($_GET['c']); ?>"


@cache
def corpus() -> list[Hostile]:
    """Every hostile upload, with what the API may answer to it."""
    dog = dog_bytes()
    small = dog_image().resize((160, 107))
    ok = frozenset({200})
    refused = frozenset({400})
    refused_or_ok = frozenset({200, 400})
    jpeg = {"content_type": b"image/jpeg", "filename": b"dog.jpeg"}
    return [
        # Decompression bombs: tiny files, huge claims.
        Hostile(
            "png 100k x 100k",
            png_claiming(100_000, 100_000),
            statuses=frozenset({413}),
            message=TOO_LARGE,
        ),
        Hostile(
            "png 8k x 8k", png_claiming(8_000, 8_000), statuses=frozenset({413}), message=TOO_LARGE
        ),
        # Run-length BMPs decode in Python, beyond the reach of the decoding time limit: 1 KB
        # for 8 s of a worker's lane. Refused at the door past 4 megapixels; below, served.
        Hostile(
            "bmp rle 49.9 MP, rows ending early",
            rle_bmp(49_900_000, 1, rows_end_early=True),
            filename=b"slow.bmp",
            content_type=b"image/bmp",
            statuses=frozenset({413}),
            message="run-length compressed",
        ),
        # Structures walked piece by piece in Python (Pillow's header parsers, our own walks):
        # 20 MB of them held the API's event loop for 10 s. Refused past a few thousand.
        Hostile(
            "jpeg, 250k empty comments before the frame",
            jpeg_with_empty_comments(250_000, before_scan=True),
            **jpeg,
            statuses=frozenset({413}),
            message="marker segments",
        ),
        Hostile(
            "jpeg, 250k empty comments before the end",
            jpeg_with_empty_comments(250_000, before_scan=False),
            **jpeg,
            statuses=frozenset({413}),
            message="marker segments",
        ),
        Hostile(
            "jpeg, 2k empty comments",
            jpeg_with_empty_comments(2_000, before_scan=True),
            **jpeg,
            statuses=ok,
            label="Eskimo_dog",
        ),
        Hostile(
            "jpeg, 1 MB of fill bytes before the frame",
            dog[:2] + b"\xff" * 2**20 + dog[2:],
            **jpeg,
            statuses=frozenset({413}),
            message="between its headers",
        ),
        Hostile(
            "png, 80k empty chunks",
            png_with_empty_chunks(80_000),
            statuses=frozenset({413}),
            message="chunks before its pixels. A camera's",
        ),
        Hostile("png, 100 empty chunks", png_with_empty_chunks(100), statuses=ok),
        # 1 KB each, 1 MB each inflated: 240 held the event loop 0.8 s as the file was opened.
        Hostile(
            "png, 240 zTXt chunks without keywords inflating to 1 MB each (247 KB)",
            png_with_inflating_chunks(b"zTXt", 240),
            statuses=frozenset({413}),
            message="more than 8 compressed text or colour-profile chunks",
        ),
        Hostile(
            "png, 9 colour profiles inflating to 1 MB each",
            png_with_inflating_chunks(b"iCCP", 9),
            statuses=frozenset({413}),
            message="more than 8 compressed text or colour-profile chunks",
        ),
        Hostile(
            "png, 8 compressed texts inflating to 1 MB each (checked off the event loop)",
            png_with_inflating_chunks(b"zTXt", 8),
            statuses=ok,
        ),
        Hostile(
            "png, 25k empty chunks after its pixels",
            png_with_empty_chunks(25_000, after_pixels=True),
            statuses=frozenset({413}),
            message="more than 20,000 chunks. A camera's",
        ),
        Hostile(
            "gif, 1 MB of stray bytes",
            gif_with_stray_bytes(1_000_000),
            filename=b"slow.gif",
            content_type=b"image/gif",
            statuses=frozenset({413}),
            message="blocks before its picture. A camera's",
        ),
        Hostile(
            "bmp rle 640 x 480",
            rle_bmp(640, 480, rows_end_early=False),
            filename=b"flat.bmp",
            content_type=b"image/bmp",
            statuses=ok,
        ),
        Hostile(
            "gif 65535 x 65535",
            gif_claiming(65_535, 65_535),
            filename=b"bomb.gif",
            statuses=frozenset({413}),
            message=TOO_LARGE,
        ),
        Hostile(
            "gif 8000 x 8000",
            gif_claiming(8_000, 8_000),
            filename=b"bomb.gif",
            statuses=frozenset({413}),
            message=TOO_LARGE,
        ),
        Hostile(
            "jpeg header 65500 x 65500",
            jpeg_claiming(65_500, 65_500),
            statuses=frozenset({413}),
            message=TOO_LARGE,
            **jpeg,
        ),
        Hostile(
            "png zTXt inflating to 64 MB",
            png_with_text_bomb(),
            statuses=refused_or_ok,
            message=UNDECODABLE,
        ),
        Hostile(
            "png 6000 x 6000 of zeros (under the pixel limit)",
            png(6_000, 6_000, 8, 0, b"\0" * 6_001 * 6_000),
            statuses=ok,
        ),
        # Costly to decode: small files whose decoding takes minutes or gigabytes.
        Hostile(
            "progressive jpeg 7000 x 7000, one scan 10,000 times (940 KB)",
            jpeg_with_repeated_scans(7_000, 10_000),
            statuses=frozenset({413}),
            message="the limit is 100",
            **jpeg,
        ),
        Hostile(
            "progressive jpeg of 100 scans (the limit)",
            jpeg_with_repeated_scans(1_000, 100),
            statuses=ok,
            **jpeg,
        ),
        # 100 KB, 4.6 s to decode: six of these held a lane long enough for the other images in
        # their batches to time out.
        Hostile(
            "progressive jpeg 5000 x 5000 of 100 scans",
            jpeg_with_repeated_scans(5_000, 100),
            statuses=frozenset({413}),
            message="are more decoding than 10 scans of the largest picture allowed",
            **jpeg,
        ),
        Hostile(
            "progressive jpeg 2000 x 2000 of 100 scans (within 10 scans of 50 megapixels)",
            jpeg_with_repeated_scans(2_000, 100),
            statuses=ok,
            **jpeg,
        ),
        Hostile(
            "progressive 4:4:4 jpeg claiming 7000 x 7000 (294 MB of coefficients)",
            jpeg_444_progressive_claiming(7_000, 7_000),
            statuses=frozenset({413}),
            message="the limit is 200 MB",
            **jpeg,
        ),
        Hostile(
            "16-bit greyscale png 7000 x 7000 (95 KB, 98 MB decoded)",
            flat_png(7_000, 7_000, 16, 0, 1),
            statuses=ok,
        ),
        # Broken files.
        Hostile("0 bytes", b"", message="empty"),
        Hostile("jpeg, SOI and EOI only", b"\xff\xd8\xff\xd9", message=None, **jpeg),
        Hostile("jpeg truncated to 40%", truncated(dog, 0.4), message=UNDECODABLE, **jpeg),
        Hostile("jpeg truncated to 5%", truncated(dog, 0.05), message=UNDECODABLE, **jpeg),
        Hostile(
            "jpeg scribbled over",
            scribbled(dog, 0.5, 400),
            statuses=refused_or_ok,
            message=UNDECODABLE,
            **jpeg,
        ),
        Hostile("png truncated to 60%", truncated(encode(small, "PNG"), 0.6), message=UNDECODABLE),
        Hostile(
            "png with a bad CRC",
            png_with_bad_crc(small),
            message=UNDECODABLE,
            statuses=refused_or_ok,
        ),
        Hostile(
            "gif truncated",
            truncated(encode(small.convert("P"), "GIF"), 0.5),
            filename=b"x.gif",
            statuses=refused_or_ok,
            message=UNDECODABLE,
        ),
        # Polyglots and impostors.
        Hostile(
            "jpeg + zip appended", dog + zip_archive(), statuses=ok, label="Eskimo_dog", **jpeg
        ),
        Hostile("jpeg + html appended", dog + HTML, statuses=ok, label="Eskimo_dog", **jpeg),
        Hostile(
            "png with php in a text chunk, named .php.png",
            encode(small, "PNG", pnginfo=_text_info(PHP.decode())),
            filename=b"shell.php.png",
            statuses=ok,
        ),
        Hostile("svg named .png", SVG, content_type=b"image/svg+xml"),
        Hostile("svg named .svg", SVG, filename=b"x.svg", content_type=b"image/svg+xml"),
        Hostile("html named .png", HTML, content_type=b"text/html"),
        Hostile("php named .jpg", PHP, filename=b"x.jpg"),
        Hostile(
            "GIF89a + html", b"GIF89a" + HTML, filename=b"x.gif", statuses=refused, message=None
        ),
        Hostile("tiff named .png", encode(small, "TIFF")),
        Hostile("pdf named .jpg", encode(small, "PDF"), filename=b"x.jpg"),
        Hostile("ico named .png", encode(small, "ICO")),
        # Odd but valid pictures.
        Hostile(
            "animated gif, 5000 frames", gif_with_frames(5000), filename=b"many.gif", statuses=ok
        ),
        Hostile("1 x 1 png", encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), statuses=ok),
        Hostile("20000 x 1 png", encode(Image.new("L", (20_000, 1), 128), "PNG"), statuses=ok),
        Hostile("1 x 20000 png", encode(Image.new("L", (1, 20_000), 128), "PNG"), statuses=ok),
        Hostile(
            "cmyk jpeg",
            encode(dog_image().convert("CMYK"), "JPEG", quality=95),
            statuses=ok,
            label="Eskimo_dog",
            **jpeg,
        ),
        Hostile("16-bit rgb png", png_16_bit_rgb(dog_image()), statuses=ok, label="Eskimo_dog"),
        Hostile("16-bit greyscale png", png_16_bit_grey(dog_image()), statuses=ok),
        Hostile("bmp", encode(small, "BMP"), filename=b"x.bmp", statuses=ok),
        Hostile("exif of 60 KB", big_exif(), statuses=ok, label="Eskimo_dog", **jpeg),
        Hostile(
            "exif ifd loop, lying counts",
            jpeg_with_segments(exif_segment(exif_loop_and_lies())),
            statuses=ok,
            label="Eskimo_dog",
            **jpeg,
        ),
        Hostile(
            "exif with 65535 entries claimed",
            jpeg_with_segments(exif_segment(exif_too_many_entries())),
            statuses=ok,
            label="Eskimo_dog",
            **jpeg,
        ),
        Hostile(
            "100 app segments of 60 KB",
            jpeg_with_segments(*[b"\xff\xe2" + b"\x5a" * 60_000] * 100),
            statuses=ok,
            label="Eskimo_dog",
            **jpeg,
        ),
        # Names and content types: the content decides, the name only gives the extension.
        *[
            Hostile(
                f"name {name!r}",
                dog,
                filename=name,
                content_type=b"image/jpeg",
                statuses=ok,
                label="Eskimo_dog",
            )
            for name in (
                b"../../../../../../tmp/imgclf-escape.jpeg",
                b"..\\..\\..\\imgclf-escape.jpeg",
                b"/etc/imgclf-escape.jpeg",
                b"evil.php\0.jpeg",
                b"a" * 300 + b".jpeg",
                "пёс 🐕 犬.JPEG".encode(),
                b".jpeg",
                b"dog.jpeg; rm -rf ~ ;.jpeg",
                b"%2e%2e%2fescape.jpeg",
            )
        ],
        *[
            Hostile(f"name {name!r}", dog, filename=name, content_type=b"image/jpeg")
            for name in (b"dog.jpeg\0.txt", b"dog.jpeg ", b"dog", b"dog.jpeg.exe")
        ],
        Hostile(
            "no filename (a form field, not a file)",
            dog,
            filename=None,
            content_type=None,
            statuses=frozenset({422}),
            message="file",
        ),
        *[
            Hostile(
                f"content type {kind!r}",
                dog,
                filename=b"dog.jpeg",
                content_type=kind,
                statuses=ok,
                label="Eskimo_dog",
            )
            for kind in (
                b"text/html",
                b"application/octet-stream",
                b"image/png",
                None,
                b'image/jpeg; charset="../../x"',
            )
        ],
    ]


def _text_info(text: str) -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text)
    return info
