"""The upload routes' multipart form (imgclf.api.predictions.form), read by the real app with the
real model behind it: what a client may send around its file, and what it is told otherwise."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.types import Message

from imgclf.api.predictions import form as form_module
from imgclf.api.predictions.form import (
    MAX_PARTS,
    FormReader,
    MalformedFormError,
    UploadFormError,
    read_upload_form,
)
from imgclf.serving import create_service_app
from imgclf.settings import Settings
from tests.api.conftest import Caller
from tests.support import DOG_JPEG

BOUNDARY = "imgclf-form-test"


@pytest.fixture
def settings(tmp_path: Path, model_dir: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'form.db'}", model_dir=model_dir, model_threads=1
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


@pytest.fixture
def alice(make_user: Callable[..., Caller], app: FastAPI) -> Caller:
    """A user of the app with the real model (the suite's ``app`` has no queue)."""
    return make_user(name="Alice")


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"\r\nContent-Type: image/jpeg'
    return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n"


def form(*parts: bytes, closed: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


def send(
    client: TestClient, caller: Caller, body: bytes, content_type: str | None = None
) -> tuple[int, str]:
    headers = {
        **caller.headers,
        "Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}",
    }
    response = client.post("/model/predict", content=body, headers=headers)
    return response.status_code, response.json().get("detail", response.json().get("prediction"))


def original_names(client: TestClient, caller: Caller) -> list[str]:
    history = client.get("/history", headers=caller.headers).json()
    return [item["original_name"] for item in history["items"]]


def test_the_file_among_other_fields_is_classified(client: TestClient, alice: Caller) -> None:
    body = form(
        part("note", b"from my phone"),
        part("file", DOG_JPEG.read_bytes(), "dog.jpeg"),
        part("album", b"holidays"),
    )
    assert send(client, alice, body) == (200, "Eskimo_dog")
    assert original_names(client, alice) == ["dog.jpeg"]


def test_a_file_name_in_utf8_is_kept(client: TestClient, alice: Caller) -> None:
    body = form(part("file", DOG_JPEG.read_bytes(), "chien é.jpeg"))
    assert send(client, alice, body) == (200, "Eskimo_dog")
    assert original_names(client, alice) == ["chien é.jpeg"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b'{"file": "dog.jpeg"}', "application/json", 422, "multipart/form-data"),
        (form(part("file", b"not a file: no file name")), None, 422, "no file name"),
        (form(part("image", b"...", "dog.jpeg")), None, 422, "`file`"),
        (form(), None, 422, "Field required"),
        (
            form(part("file", b"a", "a.jpg"), part("file", b"b", "b.jpg")),
            None,
            422,
            "one image per request",
        ),
        (form(part("file", b"cut short", "dog.jpeg"), closed=False), None, 400, "ends before"),
        (b"no boundary anywhere in here", None, 400, "does not follow the boundary"),
        (form(part("file", b"x", "dog.jpeg")), "multipart/form-data", 400, "no boundary"),
        (
            form(*[part(f"f{i}", b"x") for i in range(MAX_PARTS)], part("file", b"x", "a.jpg")),
            None,
            400,
            f"more than {MAX_PARTS} parts",
        ),
    ],
    ids=[
        "json",
        "file without a name",
        "another field",
        "empty form",
        "two files",
        "no closing boundary",
        "garbage",
        "header without boundary",
        "too many parts",
    ],
)
def test_a_form_without_one_usable_file_is_refused_saying_what_to_send(
    client: TestClient,
    alice: Caller,
    body: bytes,
    content_type: str | None,
    status: int,
    says: str,
) -> None:
    code, detail = send(client, alice, body, content_type)
    assert (code, says in detail) == (status, True), detail
    assert original_names(client, alice) == []


def feed(reader: FormReader, body: bytes, size: int = 65536) -> None:
    """As uvicorn hands a body over: 64 KB at a time, by default."""
    for start in range(0, len(body), size):
        reader.feed(body[start : start + size])


def test_a_hundred_thousand_empty_parts_stop_at_the_limit() -> None:
    """Each part costs the parser's callbacks; Starlette's form reader stopped at a thousand."""
    empty = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"\r\n\r\n\r\n'.encode()
    with pytest.raises(MalformedFormError, match=f"more than {MAX_PARTS} parts"):
        feed(FormReader(BOUNDARY.encode()), empty * 100_000)


def test_a_delimiter_split_over_several_pieces_is_counted() -> None:
    extra = part("note", f"\r\n--{BOUNDARY}.".encode() * 20)
    body = form(extra, part("file", b"x", "a.jpg"))
    with pytest.raises(MalformedFormError, match=f"more than {MAX_PARTS} parts"):
        feed(FormReader(BOUNDARY.encode()), body, size=3)


def test_a_form_in_small_pieces_is_read_whole() -> None:
    """A slow network delivers an upload a segment at a time."""
    picture = DOG_JPEG.read_bytes()
    reader = FormReader(BOUNDARY.encode())
    feed(reader, form(part("note", b"n"), part("file", picture, "dog.jpeg")), size=1448)
    assert reader.file().data == picture


def test_a_form_costing_its_parser_more_than_its_budget_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No shape known today costs more than the budget once padding and large part headers
    are refused; the budget bounds those the parser may still read byte by byte."""
    monkeypatch.setattr(form_module, "BASE_BUDGET_S", 0.0)
    monkeypatch.setattr(form_module, "BUDGET_PER_BYTE_S", 0.0)
    with pytest.raises(MalformedFormError, match="costs more to read"):
        feed(FormReader(BOUNDARY.encode()), form(part("file", DOG_JPEG.read_bytes(), "a.jpg")))


def test_only_the_files_bytes_are_kept() -> None:
    reader = FormReader(BOUNDARY.encode())
    picture = DOG_JPEG.read_bytes()
    feed(reader, form(part("note", b"n" * 3_000_000), part("file", picture, "dog.jpeg")))
    assert reader.file().data == picture
    assert reader.file().filename == "dog.jpeg"


def _read_as_the_route_does(body: bytes) -> None:
    pieces = [body[start : start + 65536] for start in range(0, len(body), 65536)]

    async def receive() -> Message:
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    content_type = f"multipart/form-data; boundary={BOUNDARY}".encode()
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type)]}
    # Driven by hand (nothing in it waits): an event loop keeps a failed task's exception in
    # a reference cycle of its own.
    reading = read_upload_form(Request(scope, receive))
    with contextlib.suppress(StopIteration):
        reading.send(None)


@pytest.mark.parametrize(
    "body",
    [
        form(part("file", DOG_JPEG.read_bytes() * 20, "dog.jpeg")),
        form(part("file", DOG_JPEG.read_bytes() * 20, "dog.jpeg"), closed=False),
    ],
    ids=["read", "refused"],
)
def test_a_read_form_is_freed_without_the_garbage_collector(body: bytes) -> None:
    """The parser calls the reader's methods, a reference cycle: until a full collection came,
    every upload's pieces stayed in memory (an idle server kept 550 MB after 48 uploads of
    15 MB). Read or refused, the reader is freed as soon as the form is read."""
    gc.collect()
    gc.disable()
    try:
        with contextlib.suppress(UploadFormError):
            _read_as_the_route_does(body)
        assert not [found for found in gc.get_objects() if isinstance(found, FormReader)]
    finally:
        gc.enable()


def test_jobs_read_the_same_form(client: TestClient, alice: Caller) -> None:
    headers = {**alice.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    refused = client.post("/model/jobs", content=form(part("note", b"x")), headers=headers)
    assert refused.status_code == 422
    accepted = client.post(
        "/model/jobs",
        content=form(part("file", DOG_JPEG.read_bytes(), "dog.jpeg")),
        headers=headers,
    )
    assert accepted.status_code == 202, accepted.text


def test_the_docs_still_offer_a_file_field(app: FastAPI) -> None:
    for path in ("/model/predict", "/model/jobs"):
        body = app.openapi()["paths"][path]["post"]["requestBody"]
        schema = body["content"]["multipart/form-data"]["schema"]
        assert (body["required"], schema["required"]) == (True, ["file"])
        assert schema["properties"]["file"]["contentMediaType"] == "application/octet-stream"
