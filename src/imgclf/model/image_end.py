"""Where the picture in an upload ends, found from its structure without decoding it.

Decoders stop once they have every pixel and ignore whatever follows, so a 1x1 PNG with 20 MB
appended is a valid image to them (and was stored as one). JPEG and PNG say where they end
(EOI, IEND), GIF too (its trailer), WebP and BMP in their headers: the API keeps no more than a
little after that (``images.picture_bytes``).
"""

from __future__ import annotations

from imgclf.model.jpeg_layout import MAX_JPEG_SEGMENTS, NEXT_MARKER, TooManySegments

# Far above any encoder's (a 20 MB PNG in 8 KB IDAT chunks has 2,560); walking them takes
# milliseconds, where 20 MB of empty chunks took Pillow's header parser seconds.
MAX_PNG_CHUNKS = 20_000
# Pillow reads the chunks before the pixels (IDAT) in Python as it opens a file, at 5 us each;
# encoders write a few (text, colour profile, physical size).
MAX_PNG_CHUNKS_BEFORE_PIXELS = 1_000
# Pillow inflates each colour profile and compressed text chunk as it reads it, up to 1 MB
# each: 1 KB of zeros inflates to 1 MB, and 240 such chunks in a 247 KB file held the event
# loop 0.8 s. The standard allows one profile; encoders write a few text chunks at most.
MAX_PNG_COMPRESSED_CHUNKS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INFLATED_KINDS = (b"iCCP", b"zTXt", b"iTXt")
_START_OF_IMAGE = b"\xff\xd8"
_END_OF_IMAGE, _START_OF_SCAN, _TEMPORARY = 0xD9, 0xDA, 0x01


class EndNotFound(ValueError):
    """The picture's structure runs on where it should have ended; ``str()`` says how."""


def image_end(data: bytes, image_format: str) -> int | None:
    """Just after the picture's own bytes; None where its structure cannot be followed (the
    decoder then has the last word)."""
    if image_format == "PNG":
        return _png_end(data)
    if image_format in ("JPEG", "MPO"):
        return _jpeg_end(data)
    if image_format == "GIF":
        return _gif_end(data)
    if image_format == "WEBP":
        return _riff_end(data)
    if image_format == "BMP":
        return _bmp_end(data)
    return None


def _riff_end(data: bytes) -> int | None:
    """A WebP is a RIFF file, whose header gives its length (libwebp reads no further)."""
    size = int.from_bytes(data[4:8], "little")
    end = 8 + size + (size & 1)  # a chunk of odd length is padded to an even one
    return end if len(data) >= 12 and end <= len(data) else None


def _bmp_end(data: bytes) -> int | None:
    """A BMP's file header gives its length, and its picture header where its pixels end (the
    decoder reads them from there, whatever the file header says): the later of the two. None
    where either is missing or beyond the file (0, which some writers put in the first)."""
    size = int.from_bytes(data[2:6], "little")
    pixels_at = int.from_bytes(data[10:14], "little")
    pixels_end = _bmp_pixels_end(data, pixels_at)
    if not 14 <= pixels_at < size <= len(data) or pixels_end is None or pixels_end > len(data):
        return None
    return max(size, pixels_end)


def _bmp_pixels_end(data: bytes, pixels_at: int) -> int | None:
    """Where an uncompressed BMP's rows end, or a compressed one's stated size; None for
    what is not read that simply (OS/2 headers, JPEG or PNG inside a BMP)."""
    if len(data) < 38 or int.from_bytes(data[14:18], "little") < 40:
        return None
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)
    bits = int.from_bytes(data[28:30], "little")
    compression = int.from_bytes(data[30:34], "little")
    if compression in (0, 3, 6):  # rows as they are (with bit fields, or alpha bit fields)
        return pixels_at + (abs(width) * bits + 31) // 32 * 4 * abs(height)
    stated = int.from_bytes(data[34:38], "little")
    return pixels_at + stated if compression in (1, 2) and stated else None


def _png_end(data: bytes) -> int | None:
    position = 8  # after the signature
    for _ in range(MAX_PNG_CHUNKS):
        if position == len(data):
            return position  # no IEND, but nothing after the last chunk either
        if position + 12 > len(data):
            return None  # truncated
        length = int.from_bytes(data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if not kind.isalpha():
            return position  # not a chunk: the picture's bytes ended before
        position += 12 + length
        if kind == b"IEND":
            return position
    raise TooManySegments(f"more than {MAX_PNG_CHUNKS:,} chunks", file_kind="PNG")


def check_png_prelude(data: bytes) -> None:
    """Count the chunks before a PNG's pixels (its first IDAT), as Pillow's header parser would
    read them, and the compressed text and colour-profile chunks anywhere in it; refuse the file
    (TooManySegments) past either limit."""
    position, compressed = 8, 0  # after the signature
    pixels_seen = False
    for index in range(MAX_PNG_CHUNKS):
        length = int.from_bytes(data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IEND" or not kind.isalpha():  # the end, or no chunk: Pillow's to judge
            return
        pixels_seen = pixels_seen or kind == b"IDAT"
        if not pixels_seen and index >= MAX_PNG_CHUNKS_BEFORE_PIXELS:
            raise TooManySegments(
                f"more than {MAX_PNG_CHUNKS_BEFORE_PIXELS:,} chunks before its pixels",
                file_kind="PNG",
            )
        compressed += _is_compressed_metadata(kind, data, position + 8)
        if compressed > MAX_PNG_COMPRESSED_CHUNKS:
            raise TooManySegments(
                f"more than {MAX_PNG_COMPRESSED_CHUNKS} compressed text or colour-profile chunks",
                file_kind="PNG",
            )
        position += 12 + length
    raise TooManySegments(f"more than {MAX_PNG_CHUNKS:,} chunks", file_kind="PNG")


def may_inflate_metadata(data: bytes) -> bool:
    """Whether the upload may be a PNG with chunks Pillow inflates as it opens the file (up to
    8 MB of them: 56 ms of one thread), by a look for their names: a few tens of microseconds,
    where walking the chunks first would cost as much as the check it decides about."""
    return data.startswith(PNG_SIGNATURE) and any(kind in data for kind in _INFLATED_KINDS)


def _is_compressed_metadata(kind: bytes, data: bytes, start: int) -> bool:
    """Whether Pillow inflates the chunk at ``start`` (its data) as it reads it: a colour
    profile (iCCP), compressed text (zTXt), or international text with its compression flag."""
    if kind in (b"iCCP", b"zTXt"):
        return True
    if kind != b"iTXt":
        return False
    keyword_end = data.find(b"\0", start, start + 80)
    return keyword_end != -1 and data[keyword_end + 1 : keyword_end + 2] == b"\x01"


def _jpeg_end(data: bytes) -> int | None:
    """The end of the last of the JPEG pictures held back to back (an MPO holds several).
    TooManySegments past ``MAX_JPEG_SEGMENTS`` steps, pictures and fill bytes included."""
    budget = [MAX_JPEG_SEGMENTS]
    end = _jpeg_picture_end(data, 2, budget)
    while end is not None and data.startswith(_START_OF_IMAGE, end):
        try:
            following = _jpeg_picture_end(data, end + 2, budget)
        except EndNotFound:
            following = None
        if following is None:
            break  # a broken picture after a whole one counts as what follows it
        end = following
    return end


def _jpeg_picture_end(data: bytes, position: int, budget: list[int]) -> int | None:
    """Just after the EOI of the picture whose SOI ends at ``position``: its segments are
    skipped by their lengths, its entropy-coded data searched for the next marker. Each step
    spends one of ``budget``, shared by the pictures of a file."""
    while position + 2 <= len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise TooManySegments()
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == _END_OF_IMAGE:
            return position + 2
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == _TEMPORARY:
            position += 1 if marker == 0xFF else 2  # a fill byte, or a marker without a length
            continue
        if position + 4 > len(data):
            return None
        length = int.from_bytes(data[position + 2 : position + 4])
        if length < 2:
            return None
        position += 2 + length
        if marker == _START_OF_SCAN:  # entropy-coded data, up to the next marker
            found = NEXT_MARKER.search(data, position)
            if found is None:
                # Decoders stop once they have every pixel, whatever follows (even megabytes
                # of zeros), so a JPEG without its end marker is refused, as truncated.
                raise EndNotFound("the JPEG has no end marker; it may be truncated.")
            position = found.start()
    return None


# Blocks before a GIF's first picture: the loop count, a comment, XMP (which ends in 257
# one-byte sub-blocks) take a few hundred; Pillow reads each one in Python as it opens the file,
# and skips stray bytes there one at a time.
MAX_GIF_PRELUDE_BLOCKS = 10_000
_EXTENSION, _PICTURE, _TRAILER = 0x21, 0x2C, 0x3B


def check_gif_prelude(data: bytes) -> None:
    """Count what Pillow's header parser reads before a GIF's first picture (extension
    sub-blocks, stray bytes) and refuse the file (TooManySegments) past the limit."""
    position = 13  # after the signature and the logical screen descriptor
    if len(data) > 10 and data[10] & 0x80:  # a global colour table follows
        position += 3 << ((data[10] & 0x07) + 1)
    steps = 0
    while position < len(data) and data[position] not in (_PICTURE, _TRAILER):
        if data[position] == _EXTENSION:
            position += 2  # its introducer and label, then sub-blocks up to a zero length
            while position < len(data) and data[position]:
                position += 1 + data[position]
                steps += 1
                if steps > MAX_GIF_PRELUDE_BLOCKS:
                    break
        steps += 1
        position += 1  # the zero length that ends an extension, or a stray byte
        if steps > MAX_GIF_PRELUDE_BLOCKS:
            raise TooManySegments(
                f"more than {MAX_GIF_PRELUDE_BLOCKS:,} blocks before its picture", file_kind="GIF"
            )


# Sub-blocks in a whole GIF: an encoder fills them (255 bytes each), so 20 MB hold about 82,000,
# plus one short one for each frame. 20 MB of 1-byte sub-blocks would be 10 million steps.
MAX_GIF_BLOCKS = 200_000


def _gif_end(data: bytes) -> int | None:
    """Just after a GIF's trailer, walking its blocks: extensions and pictures, each a run of
    sub-blocks up to a zero length; or where a byte that starts no block follows a picture (no
    encoder writes one there). None where the walk leaves the file, or meets such a byte before
    any picture (Pillow's to judge); TooManySegments past ``MAX_GIF_BLOCKS`` steps."""
    position = 13  # after the signature and the logical screen descriptor
    if len(data) > 10 and data[10] & 0x80:  # a global colour table follows
        position += 3 << ((data[10] & 0x07) + 1)
    steps, pictures = 0, 0
    while position < len(data):
        kind = data[position]
        if kind == _TRAILER:
            return position + 1
        if kind == _EXTENSION:
            position += 2  # the introducer and the label
        elif kind == _PICTURE:
            flags = data[position + 9] if position + 9 < len(data) else 0
            position += 10 + ((3 << ((flags & 0x07) + 1)) if flags & 0x80 else 0)
            position += 1  # the LZW code size
            pictures += 1
        else:
            return position if pictures else None
        while position < len(data) and data[position]:
            position += 1 + data[position]
            steps += 1
            if steps > MAX_GIF_BLOCKS:
                raise TooManySegments(f"more than {MAX_GIF_BLOCKS:,} blocks", file_kind="GIF")
        position += 1  # the zero length that ends the run
    return None
