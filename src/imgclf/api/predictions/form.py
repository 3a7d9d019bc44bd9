"""The upload routes' multipart form: its one file, read from the request's body as it arrives.

FastAPI's own form handling spools the file into a temporary file, reads it back and validates
the form as a model: a tenth of the event loop's CPU for each upload (measured). This feeds the
body to the same parser (python-multipart) piece by piece, as uvicorn hands it over, and keeps
the file's bytes alone, which the body's cap already bounds (``BodySizeLimitMiddleware``). The
route documents the form itself (``UPLOAD_FORM_DOCS``).

The parser reads some shapes byte by byte in Python, 0.3 ms a kilobyte: padding after a
boundary, and a part's headers. Browsers and HTTP libraries send neither at length, so padding
is refused outright, a part may have four headers of 1 KB and a form eight parts (its
boundaries counted cheaply before the parser sees them): a form then costs the parser at most
10 ms more than an ordinary upload of as many bytes. For shapes not known to be slow, its
parsing may cost ``BASE_BUDGET_S`` of CPU plus ``BUDGET_PER_BYTE_S`` for each byte received (a
20 MB upload costs the parser 15-27 ms, against 250 allowed)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

FIELD = "file"
FIELD_DESCRIPTION = "The image: JPEG, PNG, GIF, WebP or BMP, at most the upload size limit."
# Starlette allows a thousand; an upload needs one. Each part costs the parser's callbacks
# (100,000 empty ones in 5 MB took it 0.6 s) and its headers, read byte by byte.
MAX_PARTS = 8
MAX_PART_HEADERS = 4
MAX_PART_HEADER_BYTES = 1024
# An ordinary upload's form costs the parser 0.1 ms (a 47 KB photo), a 20 MB one 15-27 ms. The
# time is the thread's CPU time, which a busy shared host inflates: with 2 ms a form, 2 of 1,350
# photos at saturation were refused. The limits above bound the shapes known to be slow; this
# is for the others.
BASE_BUDGET_S = 0.05
BUDGET_PER_BYTE_S = 1e-8
# What the parser is given at once: uvloop hands over up to 256 KB, whose worst shape holds the
# loop 85 ms in one call; the budget is checked between slices.
SLICE_BYTES = 64 * 1024
SEND_THE_FILE = f"send the image as multipart/form-data, in the field `{FIELD}`"

UPLOAD_FORM_DOCS: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        FIELD: {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "title": "File",
                            "description": FIELD_DESCRIPTION,
                        }
                    },
                    "required": [FIELD],
                }
            }
        },
    }
}


class UploadFormError(ValueError):
    """The request's form holds no usable file; ``str()`` says what to send."""

    status_code: ClassVar[int] = 422


class MalformedFormError(UploadFormError):
    """The body is not the multipart form its header announces."""

    status_code: ClassVar[int] = 400


@dataclass(frozen=True, slots=True)
class FormFile:
    filename: str
    data: bytes


async def read_upload_form(request: Request) -> FormFile:
    """The form's file, or UploadFormError saying what is missing or malformed."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data":
        raise UploadFormError(f"body.{FIELD}: Field required ({SEND_THE_FILE})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedFormError("The multipart form's Content-Type names no boundary.")
    reader = FormReader(boundary)
    try:
        # Each piece is what uvicorn has buffered (up to 256 KB: it stops reading the socket
        # past 64 KB, and uvloop reads 256 at a time): the event loop serves others between.
        async for piece in request.stream():
            reader.feed(piece)
        return reader.file()
    except ClientDisconnect:  # nobody reads the answer; no error to log either
        raise MalformedFormError("The connection closed before the upload's end.") from None
    finally:
        reader.close()


class FormReader:
    """Feed it the body in pieces; ``file()`` then gives the form's one file."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        # The last bytes received, as long as a delimiter: one split between pieces is found.
        self._tail = b""
        self._delimiters = 0
        self._received = 0
        self._parts = 0
        self._spent_s = 0.0
        self._header, self._value = bytearray(), bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._chunks: list[bytes] | None = None  # the file part's, while it is read
        self._filename: bytes | None = None
        self._file_ended = False
        callbacks: Any = {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks,
                max_header_count=MAX_PART_HEADERS,
                max_header_size=MAX_PART_HEADER_BYTES,
            )
        except FormParserError as error:  # a boundary longer than the standard allows
            raise MalformedFormError(f"The multipart form's boundary is refused: {error}") from None

    def feed(self, piece: bytes) -> None:
        self._check_delimiters(self._tail + piece)
        self._received += len(piece)
        for start in range(0, len(piece), SLICE_BYTES):
            started = time.thread_time()
            try:
                self._parser.write(piece[start : start + SLICE_BYTES])
            except FormParserError as error:
                raise _malformed(error) from None
            self._spent_s += time.thread_time() - started
            if self._spent_s > BASE_BUDGET_S + self._received * BUDGET_PER_BYTE_S:
                raise MalformedFormError(
                    "The multipart form costs more to read than an upload's form does (bytes "
                    f"before its first boundary, or in its parts' headers); {SEND_THE_FILE}."
                )

    def _check_delimiters(self, seen: bytes) -> None:
        """Count the delimiters in ``seen`` (the tail and the new piece) and refuse padding
        after one, in one scan: a form has a few, so the bytes are searched once, where a
        count and a search for each padding searched them three times (27 ms of a 15 MB
        upload's event-loop time with a one-letter boundary, which makes searches slowest)."""
        delimiter = self._delimiter
        # Every part but the first begins with a delimiter, and so does the form's end; one
        # wholly in the tail (at its start, the tail as long as it) was counted before, but
        # what follows it is new.
        counted_before = len(self._tail) == len(delimiter)
        found = seen.find(delimiter)
        while found != -1:
            if found or not counted_before:
                self._delimiters += 1
                if self._delimiters > MAX_PARTS:
                    raise _too_many_parts()
            after = found + len(delimiter)
            if seen[after : after + 1] in (b" ", b"\t"):
                raise MalformedFormError(f"A boundary is followed by padding; {SEND_THE_FILE}.")
            found = seen.find(delimiter, after)
        self._tail = seen[-len(delimiter) :]

    def close(self) -> None:
        """Let the file's pieces go now. The parser's callbacks are this reader's methods, a
        reference cycle that only the garbage collector's full collections free: until one
        came, each upload's pieces stayed in memory (an idle process kept 550 MB after 48
        uploads of 15 MB, all freed by one ``gc.collect()``)."""
        self._parser.callbacks = {}
        self._chunks = None

    def file(self) -> FormFile:
        if self._filename is None:
            raise UploadFormError(f"body.{FIELD}: Field required ({SEND_THE_FILE})")
        if not self._file_ended:
            raise MalformedFormError("The multipart form ends before its closing boundary.")
        assert self._chunks is not None
        return FormFile(_decoded(self._filename), b"".join(self._chunks))

    # The parser's callbacks ---------------------------------------------------------------

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise _too_many_parts()
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._header).lower()] = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _kind, options = parse_options_header(disposition)
        if options.get(b"name") != FIELD.encode():
            return  # another field: read past, not kept
        if b"filename" not in options:
            raise UploadFormError(
                f'body.{FIELD}: the part has no file name; send the image as a file (filename="…")'
            )
        if self._filename is not None:
            raise UploadFormError(f"body.{FIELD}: one image per request, please")
        self._filename = options[b"filename"]
        self._chunks = []

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._chunks is not None and not self._file_ended:
            self._chunks.append(data[start:end])

    def _end(self) -> None:
        if self._chunks is not None:
            self._file_ended = True


def _malformed(error: FormParserError) -> MalformedFormError:
    if "header" in str(error).lower():
        return MalformedFormError(
            f"A part of the form has more than {MAX_PART_HEADERS} headers, or one over "
            f"{MAX_PART_HEADER_BYTES} bytes."
        )
    return MalformedFormError(
        "The body does not follow the boundary its Content-Type names (it must begin with "
        "--boundary, and each part end with CRLF --boundary)."
    )


def _too_many_parts() -> MalformedFormError:
    return MalformedFormError(f"The form has more than {MAX_PARTS} parts; {SEND_THE_FILE}.")


def _decoded(name: bytes) -> str:
    """A file name as browsers send it (UTF-8), else byte for byte (as Starlette reads it)."""
    try:
        return name.decode()
    except UnicodeDecodeError:
        return name.decode("latin-1")
