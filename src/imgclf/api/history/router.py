"""``GET /history``: predictions a page at a time with a total; ``GET
/model/predictions/{id}/image``: the image a prediction was made on, for its owner."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from imgclf.api.deps import CurrentUser, DatabaseDep, PageDep, SettingsDep, id_path
from imgclf.api.errors import error_responses
from imgclf.api.history import service
from imgclf.api.history.schemas import HistoryPage

router = APIRouter(tags=["history"])
_CHUNK_BYTES = 256 * 1024

# What the stored bytes are, from their first bytes (the extension is the client's).
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def _media_type(head: bytes) -> str:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for signature, media_type in _SIGNATURES:
        if head.startswith(signature):
            return media_type
    return "application/octet-stream"


@router.get(
    "/history",
    response_model=HistoryPage,
    summary="Your predictions, newest first, a page at a time, with your latest feedback",
    responses=error_responses(401, 422),
)
async def read_history(db: DatabaseDep, user: CurrentUser, page: PageDep) -> HistoryPage:
    history = await db.run(service.read_history, user.id, page.limit, page.offset)
    return HistoryPage.model_validate({"total": history.total, "items": history.items})


@router.get(
    "/model/predictions/{prediction_id}/image",
    summary="The image one of your predictions was made on",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"image/*": {}}, "description": "The stored upload."},
        **error_responses(401, 404, 422),
    },
)
async def read_prediction_image(
    prediction_id: Annotated[int, id_path("One of your predictions.")],
    db: DatabaseDep,
    user: CurrentUser,
    settings: SettingsDep,
) -> StreamingResponse:
    not_found = HTTPException(404, f"Prediction {prediction_id} not found")
    try:
        name = await db.run(service.image_file_name, prediction_id, user.id, user.is_admin)
    except service.PredictionImageNotFound:
        raise not_found from None
    try:
        handle = (settings.upload_dir / name).open("rb")
    except OSError:  # stored before uploads were kept, or removed since
        raise HTTPException(
            404, f"The image of prediction {prediction_id} is no longer stored"
        ) from None
    # Sent from the file opened here, so a file removed meanwhile (the history's retention, an
    # account's deletion) is still sent whole rather than failing half-way.
    # Cache-Control stays the middleware's no-store: an image is its owner's, and a browser on
    # a shared machine must not keep it after they log out.
    return OpenFileResponse(handle)


class OpenFileResponse(StreamingResponse):
    """An open file's bytes, in pieces read in a worker thread; the file is closed when the
    answer ends, however it ends. (A client that goes away mid-way cancels the sending and
    leaves the reading generator suspended: closing it is this class's job, not the garbage
    collector's, or each such client would keep a file, and a deleted file's space, held.)"""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        try:
            head = handle.read(12)
            handle.seek(0)
            size = os.fstat(handle.fileno()).st_size
        except OSError:
            handle.close()
            raise
        super().__init__(
            self._chunks(), media_type=_media_type(head), headers={"Content-Length": str(size)}
        )

    def _chunks(self) -> Iterator[bytes]:
        while chunk := self.handle.read(_CHUNK_BYTES):
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # No read is under way: a cancelled wait for a worker thread waits for its end.
            self.handle.close()
