"""Accepting an upload: size cap, extension and content checks, a name from its content, storage."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from imgclf.model.images import (
    ImageLimits,
    ImageTooLargeError,
    check_extension,
    inspect_image,
    picture_bytes,
)
from imgclf.settings import Settings
from imgclf.tracing import span

logger = logging.getLogger(__name__)


class StorageFullError(Exception):
    """The upload could not be written (disk full, folder gone or read-only)."""


@dataclass(frozen=True, slots=True)
class AcceptedUpload:
    data: bytes
    digest: str
    file_name: str
    # The client's own name for the file, for people to recognize it; never a path here.
    original_name: str = ""


async def accept_upload(file: UploadFile, settings: Settings) -> AcceptedUpload:
    """Read at most the byte limit and refuse anything that is not an image we decode.

    The extension must be one we support and the content must really be an image; the content
    decides the decoder (PNG bytes in a .jpg file are classified and keep the .jpg name).
    """
    with span("parse"):
        limit = settings.max_upload_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLargeError(f"The file is larger than the {limit / 2**20:g} MB limit.")
        extension = check_extension(file.filename or "")
        data = picture_bytes(data, inspect_image(data, ImageLimits.from_settings(settings)))
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    # Named by content alone, never by the client's path: no traversal, one copy per image.
    return AcceptedUpload(
        data=data,
        digest=digest,
        file_name=f"{digest}{extension}",
        original_name=display_file_name(file.filename or ""),
    )


def display_file_name(name: str) -> str:
    """The last part of a client's file name, without control characters, at most 255."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:255]


# Both take the files' names in one order (their hashes'), so two transactions never wait on
# each other's names.
_HOLD_NAMES = text(
    "SELECT pg_advisory_xact_lock(key) FROM "
    "(SELECT DISTINCT hashtextextended(name, 0) AS key FROM unnest(CAST(:names AS text[])) "
    "AS name ORDER BY key) AS keys"
)


def hold_upload_names(connection: Connection | Session, names: Iterable[str]) -> None:
    """Until the transaction ends, no other transaction may store or remove these uploads.

    A user's deletion removes the files no one else recorded, while another user's prediction
    of the same picture may be finding the file in place: each holds the names it touches, so
    the second waits for the first and then sees its rows. On SQLite every writing
    transaction already holds the whole database; on PostgreSQL these are advisory locks."""
    wanted = sorted(set(names))
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    if wanted and bind.dialect.name == "postgresql":
        connection.execute(_HOLD_NAMES, {"names": wanted})


def remove_uploads(upload_dir: Path, names: Iterable[str]) -> None:
    """Delete these uploads (names a predictions row held; never a path from a client)."""
    for name in names:
        try:
            (upload_dir / Path(name).name).unlink(missing_ok=True)
        except OSError as error:  # the account is deleted all the same
            logger.error("could not remove the upload %s from %s: %s", name, upload_dir, error)


def store_upload(upload_dir: Path, upload: AcceptedUpload) -> None:
    """Write the upload once, or raise StorageFullError (the prediction is then not recorded
    either)."""
    try:
        _write_once(upload_dir, upload)
    except OSError as error:
        logger.error("could not store the upload %s in %s: %s", upload.file_name, upload_dir, error)
        reason = error.strerror or type(error).__name__  # no server path in the answer
        raise StorageFullError(
            f"Insufficient storage: the image could not be saved ({reason}); retry later."
        ) from None


def _write_once(upload_dir: Path, upload: AcceptedUpload) -> None:
    """Concurrent writers of the same content each rename a full file; none leaves a part."""
    target = upload_dir / upload.file_name
    if target.exists():
        return
    upload_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=upload_dir, prefix=".upload-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(upload.data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
