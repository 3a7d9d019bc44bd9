"""Accepting an upload: size cap, extension and content checks, a name from its content, storage."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from imgclf.api.predictions.form import FormFile
from imgclf.db.models import Prediction
from imgclf.model.image_end import may_inflate_metadata
from imgclf.model.images import (
    ImageError,
    ImageLimits,
    ImageTooLargeError,
    check_extension,
    inspect_image,
    picture_bytes,
)
from imgclf.settings import Settings
from imgclf.tracing import span

logger = logging.getLogger(__name__)
# Uploads past this size are checked in a worker thread, off the event loop. The checks' walks
# are bounded (model.images.check_structure), so a smaller file costs the loop 16 ms at worst
# whatever it holds, an ordinary one a third of a millisecond; but hashing 20 MB alone takes 40,
# and a thread's round trip would add a tenth of a millisecond to every ordinary prediction.
# Nor are PNGs whose colour profile or text Pillow inflates as it opens them checked on the loop:
# a few KB of such chunks inflate to megabytes (model.image_end.MAX_PNG_COMPRESSED_CHUNKS).
INLINE_CHECK_BYTES = 256 * 1024


class StorageFullError(Exception):
    """The upload could not be written (disk full, folder gone or read-only)."""


class DigestCollisionError(ImageError):
    """Another picture is stored under the upload's name: its MD5 digest (the name the API
    contract gives an upload) is the same, its bytes are not. Only files forged to collide do
    that, and storing the second as the first would show its sender someone else's picture in
    their history, and label that picture in the feedback data set with the answers given on
    theirs."""

    def __init__(self) -> None:
        super().__init__(
            "The image is refused: a different picture with the same MD5 digest is already "
            "stored (only files forged to collide share one); send another picture."
        )


@dataclass(frozen=True, slots=True)
class AcceptedUpload:
    data: bytes
    digest: str
    file_name: str
    # The client's own name for the file, for people to recognize it; never a path here.
    original_name: str = ""


async def accept_upload(file: FormFile, settings: Settings) -> AcceptedUpload:
    """Refuse what is over the byte limit or is not an image we decode.

    The extension must be one we support and the content must really be an image; the content
    decides the decoder (PNG bytes in a .jpg file are classified and keep the .jpg name).
    """
    with span("parse"):
        limit, data = settings.max_upload_bytes, file.data
        if len(data) > limit:
            raise ImageTooLargeError(f"The file is larger than the {limit / 2**20:g} MB limit.")
        extension = check_extension(file.filename)
        limits = ImageLimits.from_settings(settings)
        if len(data) > INLINE_CHECK_BYTES or may_inflate_metadata(data):
            data, digest = await run_in_threadpool(_checked, data, limits)
        else:
            data, digest = _checked(data, limits)
    # Named by content alone, never by the client's path: no traversal, one copy per image.
    return AcceptedUpload(
        data=data,
        digest=digest,
        file_name=f"{digest}{extension}",
        original_name=display_file_name(file.filename),
    )


def _checked(data: bytes, limits: ImageLimits) -> tuple[bytes, str]:
    """The picture's own bytes, once checked, and their digest."""
    data = picture_bytes(data, inspect_image(data, limits))
    return data, _md5(data)


def _md5(data: bytes) -> str:
    """An upload's name, as the API contract has it (``<md5 hex>.<ext>``); ``_write_once``
    refuses a second picture forged to share one."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def display_file_name(name: str) -> str:
    """The last part of a client's file name, without control characters, at most 255."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in base if c.isprintable())[:255]


# One advisory lock for the upload folder on PostgreSQL: recorders share it, a deletion takes it
# alone. One per file name would not do: a user with thousands of files would need as many
# locks, past what PostgreSQL's lock table holds (64 per connection by default).
_UPLOADS_LOCK = 4_242_002
_SHARE_UPLOADS = text(f"SELECT pg_advisory_xact_lock_shared({_UPLOADS_LOCK})")
_TAKE_UPLOADS = text(f"SELECT pg_advisory_xact_lock({_UPLOADS_LOCK})")


def hold_uploads(connection: Connection | Session, *, removing: bool = False) -> None:
    """Until the transaction ends: while storing (shared), no upload is removed; while
    removing, no upload is stored.

    A user's deletion removes the files no one else recorded, while another user's prediction
    of the same picture may be finding the file in place: the deletion waits for the
    recordings under way and then sees their rows, and new ones wait for it. On SQLite every
    writing transaction already holds the whole database."""
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    if bind.dialect.name == "postgresql":
        connection.execute(_TAKE_UPLOADS if removing else _SHARE_UPLOADS)


def name_chunks(names: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """The names in sorted pieces, for IN lists of a bounded length whatever the history."""
    ordered = sorted(names)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def recorded_names(session: Session, names: set[str]) -> set[str]:
    """Which of these upload names a prediction still holds (anyone's)."""
    found = set[str]()
    for chunk in name_chunks(names):
        found.update(
            session.scalars(
                select(Prediction.image_file_name)
                .where(Prediction.image_file_name.in_(chunk))
                .distinct()
            )
        )
    return found


def remove_uploads(upload_dir: Path, names: Iterable[str]) -> None:
    """Delete these uploads (names a predictions row held; never a path from a client)."""
    for name in names:
        try:
            (upload_dir / Path(name).name).unlink(missing_ok=True)
        except OSError as error:  # the account is deleted all the same
            logger.error("could not remove the upload %s from %s: %s", name, upload_dir, error)


def store_upload(upload_dir: Path, upload: AcceptedUpload) -> None:
    """Write the upload once, or raise StorageFullError or DigestCollisionError (the prediction
    is then not recorded either)."""
    try:
        _write_once(upload_dir, upload)
    except OSError as error:
        logger.error("could not store the upload %s in %s: %s", upload.file_name, upload_dir, error)
        reason = error.strerror or type(error).__name__  # no server path in the answer
        raise StorageFullError(
            f"Insufficient storage: the image could not be saved ({reason}); retry later."
        ) from None


def _write_once(upload_dir: Path, upload: AcceptedUpload) -> None:
    """Publish the upload under its name unless a file there holds it already.

    The file is written aside and then linked to its name, which fails where a file is: of
    writers of the same name at once (other processes' recorders, on PostgreSQL), the first
    publishes and the others compare with what it published, so another picture forged to
    share the digest is refused even when both arrive together (a check, then a rename, let
    the last writer win). A file that no longer matches its own name (damaged on disk) is
    replaced."""
    target = upload_dir / upload.file_name
    if _holds(target, upload):
        return
    upload_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=upload_dir, prefix=".upload-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(upload.data)
        try:
            os.link(temporary, target)
        except FileExistsError:
            if not _holds(target, upload):
                os.replace(temporary, target)
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:
                raise
            os.replace(temporary, target)  # a file system without links: the last one stays
    finally:
        Path(temporary).unlink(missing_ok=True)


# What link(2) answers on a file system that has no hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP}


def _holds(target: Path, upload: AcceptedUpload) -> bool:
    """Whether the file at ``target`` is this upload (0.02 ms for a photo, read back from the
    page cache); False when there is none or it is damaged, DigestCollisionError when it is
    another picture of the same MD5."""
    try:
        stored = target.read_bytes()
    except FileNotFoundError:
        return False
    if stored == upload.data:
        return True
    if _md5(stored) == upload.digest:
        raise DigestCollisionError()
    return False
