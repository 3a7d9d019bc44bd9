"""``imgclf export-feedback DIR``: the uploads users confirmed or corrected, as a labelled data
set in the ImageFolder layout (one folder per right class, ``<wnid>_<name>``), with a manifest.

One example per user and picture, with the newest verdict that user gave on it, and one file
per picture and class: a repeat upload costs no quota, and one picture sent 200 times and
marked each time was copied 200 times (108 MB from one 565 KB file), each copy labelled as its
sender chose. So the export is never larger than what users' quotas let them store.

Only files already in the uploads folder are copied, to a folder on the same machine. Users
appear only as a keyed hash of their id; the key is not written out. Running it again brings
the folder up to date: files are copied once, and those whose feedback changed or went are
removed.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session

from imgclf.api.feedback.classes import ClassList, UnknownClassError, find_class_list
from imgclf.db.engine import Database, make_engine
from imgclf.db.models import Feedback, Prediction
from imgclf.settings import Settings

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportError(RuntimeError):
    """The target folder cannot take the export; the message says why."""


@dataclass(frozen=True, slots=True)
class Labelled:
    """One manifest row: a picture and what one user said it shows (``prediction_id``: their
    prediction of it whose verdict was given last)."""

    prediction_id: int
    model: str
    predicted_class: str
    score: float
    feedback: str  # "right" or "wrong"
    right_class: str
    right_wnid: str
    file: str  # relative to the export folder
    user: str  # keyed hash of the user id
    predicted_at: str


@dataclass(frozen=True, slots=True)
class ExportSummary:
    images: int
    copied: int
    removed: int
    missing: int
    classes: int


def user_key(settings: Settings, salt: str | None) -> bytes:
    """The key user ids are hashed with: the given salt, else one derived from the secret key
    (stable across runs, so one user keeps one hash, and never written out)."""
    if salt:
        return salt.encode()
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"imgclf feedback export: user ids", hashlib.sha256).digest()


def hashed_user(key: bytes, user_id: int) -> str:
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


def class_folder(name: str, wnid: str) -> str:
    safe = _UNSAFE.sub("_", name).strip("._") or "unnamed"
    return f"{wnid}_{safe}" if wnid else safe


def _newest_verdicts(session: Session) -> Iterator[Row[Prediction, Feedback]]:
    """Per user and picture, the labelled prediction whose verdict was given last (marked
    right, or wrong with the right class), in the order of the predictions; chosen by the
    database and read in pieces, whatever the history."""
    labelled = or_(
        Feedback.correct.is_(True),
        Feedback.correct.is_(False) & Feedback.correct_class.is_not(None),
    )
    rank = func.row_number().over(
        partition_by=(Prediction.user_id, Prediction.image_file_name),
        order_by=(Feedback.created_at.desc(), Prediction.id.desc()),
    )
    ranked = (
        select(Prediction.id.label("prediction"), Feedback.id.label("feedback"), rank.label("rank"))
        .join(Feedback, Feedback.prediction_id == Prediction.id)
        .where(labelled)
        .subquery()
    )
    query = (
        select(Prediction, Feedback)
        .join(ranked, ranked.c.prediction == Prediction.id)
        .join(Feedback, Feedback.id == ranked.c.feedback)
        .where(ranked.c.rank == 1)
        .order_by(Prediction.id)
        .execution_options(yield_per=500)
    )
    yield from session.execute(query)


class _WordNetIds:
    """WordNet ids of label names, when a model's labels say them without doubt."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lists: dict[str, ClassList | None] = {}

    def of(self, model: str, name: str) -> str:
        if model not in self.lists:
            self.lists[model] = find_class_list(self.settings, model)
        classes = self.lists[model]
        if classes is None:
            return ""
        try:
            return classes.resolve(name).wnid or ""
        except UnknownClassError:
            return ""


def _copy_once(source: Path, target: Path) -> bool:
    """Copy unless an identical-size copy is there; True if it copied."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".export-")
    os.close(descriptor)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return True


def _previous_files(target: Path) -> set[str]:
    """Files the last export wrote here, read from its CSV manifest row by row; refuses a
    non-empty folder that is not an export."""
    if not (target / MANIFEST_JSON).is_file():
        if target.exists() and any(target.iterdir()):
            raise ExportError(
                f"{target} holds files and no {MANIFEST_JSON}: it is not an earlier export. "
                "Choose an empty or new folder."
            )
        return set()
    manifest = target / MANIFEST_CSV
    try:
        with manifest.open(newline="", encoding="utf-8") as file:
            return {row["file"] for row in csv.DictReader(file)}
    except (OSError, ValueError, KeyError, csv.Error) as error:
        raise ExportError(f"{manifest} cannot be read ({error}); remove the folder") from None


class _Manifests:
    """manifest.json and manifest.csv, written a row at a time beside their final names and
    put in place once whole: a data set's rows are never all in memory."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.json_path = target / f".{MANIFEST_JSON}.tmp"
        self.csv_path = target / f".{MANIFEST_CSV}.tmp"
        self._json = self.json_path.open("w", encoding="utf-8")
        try:
            self._csv_file = self.csv_path.open("w", encoding="utf-8", newline="")
        except OSError:
            self._json.close()
            self.json_path.unlink(missing_ok=True)
            raise
        self._csv = csv.DictWriter(self._csv_file, fieldnames=list(Labelled.__dataclass_fields__))
        self._csv.writeheader()
        self._json.write('{\n "images": [')
        self._first = True

    def add(self, row: Labelled) -> None:
        fields = asdict(row)
        self._csv.writerow(fields)
        self._json.write(("\n  " if self._first else ",\n  ") + json.dumps(fields))
        self._first = False

    def finish(self, classes: Counter[str], missing: int) -> None:
        counts = json.dumps(dict(sorted(classes.items())))
        self._json.write(f'\n ],\n "classes": {counts},\n "missing_files": {missing}\n}}\n')
        self._json.close()
        self._csv_file.close()
        os.replace(self.json_path, self.target / MANIFEST_JSON)
        os.replace(self.csv_path, self.target / MANIFEST_CSV)

    def close(self) -> None:
        """Close both files (again, harmlessly); what was not put in place is removed."""
        self._json.close()
        self._csv_file.close()
        self.json_path.unlink(missing_ok=True)
        self.csv_path.unlink(missing_ok=True)


def _remove(target: Path, stale: set[str]) -> int:
    """Remove files an earlier export wrote and this one does not (feedback changed or went),
    and class folders left empty; only inside ``target``."""
    removed = 0
    for relative in sorted(stale):
        path = (target / relative).resolve()
        if target in path.parents and path.is_file():
            path.unlink()
            removed += 1
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
    return removed


def export_feedback(
    settings: Settings, session: Session, target: Path, *, salt: str | None = None
) -> ExportSummary:
    """Write (or bring up to date) the data set in ``target``."""
    target = target.resolve()
    uploads = settings.upload_dir.resolve()
    if target == uploads or uploads in target.parents:
        raise ExportError("The export folder must be outside the uploads folder")
    previous = _previous_files(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        manifests = _Manifests(target)
        try:
            written = _write_examples(settings, session, target, manifests, salt)
            manifests.finish(written.classes, written.missing)
        finally:
            manifests.close()
        removed = _remove(target, previous - written.files)
    except OSError as error:  # a picture that cannot be read or copied, a full disk
        raise ExportError(
            f"The export stopped: {error.strerror} ({error.filename or target}); the last "
            "export's manifests are as they were."
        ) from None
    return ExportSummary(
        sum(written.classes.values()),
        written.copied,
        removed,
        written.missing,
        len(written.classes),
    )


@dataclass
class _Written:
    """What an export wrote: its files (relative to its folder), its rows per class folder,
    how many files it copied, and how many pictures were missing."""

    files: set[str] = field(default_factory=set)
    classes: Counter[str] = field(default_factory=Counter)
    copied: int = 0
    missing: int = 0


def _write_examples(
    settings: Settings, session: Session, target: Path, manifests: _Manifests, salt: str | None
) -> _Written:
    """Copy each labelled picture into its class folder and add its manifest row."""
    uploads = settings.upload_dir.resolve()
    key = user_key(settings, salt)
    wordnet = _WordNetIds(settings)
    written = _Written()
    for prediction, feedback in _newest_verdicts(session):
        source = uploads / prediction.image_file_name
        # The service stores plain files: a link there would copy whatever it points at.
        if source.parent != uploads or source.is_symlink() or not source.is_file():
            written.missing += 1  # removed since, or stored by another host
            continue
        if feedback.correct:
            name = prediction.label
            wnid = wordnet.of(prediction.model_id, name)
        else:
            name = feedback.correct_class or ""
            wnid = feedback.correct_wnid or wordnet.of(prediction.model_id, name)
        folder = class_folder(name, wnid)
        relative = f"{folder}/{prediction.image_file_name}"
        written.copied += _copy_once(source, target / relative)
        written.files.add(relative)
        written.classes[folder] += 1
        manifests.add(
            Labelled(
                prediction_id=prediction.id,
                model=prediction.model_id,
                predicted_class=prediction.label,
                score=prediction.score,
                feedback="right" if feedback.correct else "wrong",
                right_class=name,
                right_wnid=wnid,
                file=relative,
                user=hashed_user(key, feedback.user_id),
                predicted_at=prediction.created_at.isoformat(),
            )
        )
    return written


def run_export(settings: Settings, target: Path, *, salt: str | None = None) -> ExportSummary:
    """The export in a read-only transaction of its own: what ``imgclf export-feedback`` runs."""
    database = Database(make_engine(settings))
    try:
        with database.transaction(writes=False) as session:
            return export_feedback(settings, session, target, salt=salt)
    finally:
        database.dispose()
