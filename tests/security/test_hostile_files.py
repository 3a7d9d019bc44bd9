"""Hostile uploads against the real service: refused clearly or classified, never a crash.

Every file of the generated corpus (``hostile_files.py``) goes to ``POST /model/predict`` in
both modes: embedded (the model in threads of the API process) and Redis (a real worker
process decodes). Afterwards a normal photo still comes out ``Eskimo_dog``, the worker is the
same live one, and the data folder holds nothing but the database and uploads named
``<md5 of the bytes>.<extension>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from imgclf.localservers import RedisServer
from imgclf.model.repository import live_record_path
from tests.security.conftest import Service, isolated_settings, start_service
from tests.security.hostile_files import Hostile, corpus, dog_bytes
from tests.support import start_worker, stop_process, wait_for_workers

CORPUS = corpus()


def md5(data: bytes) -> str:
    """The upload naming scheme's hash (a name, not a security measure)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


UPLOAD_NAME = re.compile(r"^(?P<md5>[0-9a-f]{32})\.(?P<ext>png|jpe?g|gif|webp|bmp)$")
SUPPORTED = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
# Generous: the largest upload (6 MB) and the 36-megapixel decode on two busy cores.
ANSWER_WITHIN_S = 8.0


@pytest.fixture(scope="module", params=["embedded", "redis"])
def hostile_service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    shared_password_hash: str,
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    settings = isolated_settings(
        data_dir=root / "data", model_dir=model_dir, model_threads=1, cache=False
    )
    if request.param == "embedded":
        yield from start_service(settings, shared_password_hash)
        return
    server: RedisServer = request.getfixturevalue("redis_server_session")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    worker = start_worker(server.url, model_dir)
    try:
        wait_for_workers(server.url, 1)
        settings = settings.model_copy(update={"queue_url": server.url})
        for service in start_service(settings, shared_password_hash):
            service.worker = worker  # type: ignore[attr-defined]
            yield service
        assert worker.poll() is None, "the worker process died during the hostile uploads"
    finally:
        stop_process(worker)


def post(service: Service, hostile: Hostile, headers: dict[str, str]) -> tuple[int, dict, float]:
    body, content_type = hostile.multipart()
    started = time.perf_counter()
    answer = service.client.post(
        "/model/predict", content=body, headers={**headers, "Content-Type": content_type}
    )
    return answer.status_code, answer.json(), time.perf_counter() - started


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damaged EXIF
@pytest.mark.parametrize("hostile", CORPUS, ids=[item.id for item in CORPUS])
def test_each_hostile_file_is_refused_clearly_or_classified(
    hostile_service: Service, hostile: Hostile
) -> None:
    caller = hostile_service.make_user()
    status, body, elapsed = post(hostile_service, hostile, caller.headers)

    assert status in hostile.statuses, body
    assert elapsed < ANSWER_WITHIN_S
    if status == 200:
        match = UPLOAD_NAME.match(body["image_file_name"])
        assert match, body["image_file_name"]
        assert match["md5"] == md5(hostile.data)
        name = (hostile.filename or b"").decode("utf-8", "replace").lower()
        assert name.endswith(f".{match['ext']}")  # the upload's own extension, nothing else
        assert len(body["top_k"]) == 5
        if hostile.label is not None:
            assert body["prediction"] == hostile.label
        return
    detail = body["detail"]
    assert isinstance(detail, str)
    assert detail.strip()
    if hostile.message is not None:
        assert hostile.message in detail
    # Refusals never echo what was sent: no markup, no paths, no file name.
    for echo in ("<script", "<?php", "../", "escape"):
        assert echo not in detail


def test_after_the_corpus_the_same_worker_still_classifies_and_only_named_uploads_exist(
    hostile_service: Service,
) -> None:
    caller = hostile_service.make_user()
    names = [b"../../../../../../tmp/imgclf-escape.jpeg", b"/etc/imgclf-escape.jpeg"]
    for name in names:  # also when this test runs alone
        status, _body, _ = post(
            hostile_service, Hostile("escape", dog_bytes(), filename=name), caller.headers
        )
        assert status == 200

    status, body, _ = post(
        hostile_service, Hostile("dog", dog_bytes(), filename=b"dog.jpeg"), caller.headers
    )
    assert (status, body["prediction"]) == (200, "Eskimo_dog")
    ready = hostile_service.client.get("/health/ready").json()
    assert ready["checks"]["workers"] == 1
    worker = getattr(hostile_service, "worker", None)
    if worker is not None:
        assert worker.poll() is None

    settings = hostile_service.settings
    data_dir = settings.data_dir
    upload_dir = hostile_service.settings.upload_dir
    # Nothing beside the data folder, nothing in it but the database, the record of the live
    # model versions and the uploads folder.
    assert sorted(p.name for p in data_dir.parent.iterdir()) == ["data"]
    for path in data_dir.rglob("*"):
        if path.is_dir():
            assert path == upload_dir, path
            continue
        if path.parent == data_dir:
            assert path.name.startswith("imgclf.db") or path == live_record_path(settings), path
            continue
        assert path.parent == upload_dir, path
        match = UPLOAD_NAME.match(path.name)
        assert match, path.name  # no temporary file left over, no client-chosen name
        assert md5(path.read_bytes()) == match["md5"]
    for escaped in (Path("/tmp/imgclf-escape.jpeg"), Path("/etc/imgclf-escape.jpeg")):
        assert not escaped.exists()
    assert not list(Path.cwd().rglob("*escape*"))


def test_one_file_per_content_and_extension_whatever_the_names(hostile_service: Service) -> None:
    caller = hostile_service.make_user()
    upload_dir = hostile_service.settings.upload_dir
    digest = md5(dog_bytes())
    for number in range(5):
        hostile = Hostile("dog", dog_bytes(), filename=f"copy-{number}.JPEG".encode())
        assert post(hostile_service, hostile, caller.headers)[0] == 200
    # Every upload of the dog in this module was named .jpeg or .JPEG: one file holds them all.
    assert [p.name for p in upload_dir.iterdir() if p.name.startswith(digest)] == [f"{digest}.jpeg"]
    assert all(name.endswith(SUPPORTED) for name in os.listdir(upload_dir))
