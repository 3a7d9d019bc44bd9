"""The upload routes' multipart form: its one file, read straight from the request's body.

FastAPI's own form handling spools the file into a temporary file, reads it back and validates
the form as a model: a tenth of the event loop's CPU for each upload (measured). This reads it
with the same parser (python-multipart) and keeps the file in memory, which the body's cap
already bounds (``BodySizeLimitMiddleware``). The route documents the form itself
(``UPLOAD_FORM_DOCS``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

FIELD = "file"
FIELD_DESCRIPTION = "The image: JPEG, PNG, GIF, WebP or BMP, at most the upload size limit."
# Starlette allows a thousand; an upload needs one. Each part costs the parser's callbacks:
# 100,000 empty ones in 5 MB took it 0.6 s.
MAX_PARTS = 16
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


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    ended: bool = False

    def disposition(self) -> tuple[bytes, dict[bytes, bytes]]:
        return parse_options_header(self.headers.get(b"content-disposition", b""))


async def read_upload_form(request: Request) -> FormFile:
    """The form's file, or UploadFormError saying what is missing or malformed."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data":
        raise UploadFormError(f"body.{FIELD}: Field required ({SEND_THE_FILE})")
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedFormError("The multipart form's Content-Type names no boundary.")
    return parse_upload_form(await request.body(), boundary)


def parse_upload_form(body: bytes, boundary: bytes) -> FormFile:
    parts: list[_Part] = []
    header_name, header_value = bytearray(), bytearray()

    def begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise MalformedFormError(f"The form has more than {MAX_PARTS} parts; {SEND_THE_FILE}.")
        parts.append(_Part())

    def header_end() -> None:
        parts[-1].headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def data(buffer: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(buffer[start:end])

    def part_end() -> None:
        parts[-1].ended = True

    callbacks: Any = {
        "on_part_begin": begin,
        "on_header_field": lambda b, s, e: header_name.extend(b[s:e]),
        "on_header_value": lambda b, s, e: header_value.extend(b[s:e]),
        "on_header_end": header_end,
        "on_part_data": data,
        "on_part_end": part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise MalformedFormError(f"The multipart form could not be read: {error}") from None
    return _the_file(parts)


def _the_file(parts: list[_Part]) -> FormFile:
    files = []
    for part in parts:
        _kind, options = part.disposition()
        # A part without a file name is a text field, as browsers send them.
        if options.get(b"name") == FIELD.encode() and b"filename" in options:
            files.append((part, options[b"filename"]))
    if not files:
        raise UploadFormError(f"body.{FIELD}: Field required ({SEND_THE_FILE})")
    if len(files) > 1:
        raise UploadFormError(f"body.{FIELD}: one image per request, please")
    part, filename = files[0]
    if not part.ended:
        raise MalformedFormError("The multipart form ends before its closing boundary.")
    return FormFile(_decoded(filename), b"".join(part.chunks))


def _decoded(name: bytes) -> str:
    """A file name as browsers send it (UTF-8), else byte for byte (as Starlette reads it)."""
    try:
        return name.decode()
    except UnicodeDecodeError:
        return name.decode("latin-1")
