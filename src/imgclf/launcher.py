"""Start the local service as processes and wait until it serves: `imgclf up`, the benchmarks,
the stress runner and the tests all start it with these pieces.

Each child runs in a session (a process group) of its own, so a stop reaches what it started
too (uvicorn's processes, `imgclf worker`'s processes, Streamlit): SIGTERM to the whole group,
a grace period, then SIGKILL to whatever is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TextIO

import psutil
from pydantic import ValidationError

from imgclf.localservers import RedisServer, free_port
from imgclf.settings import Settings

STOP_GRACE_S = 20.0
_COLOURS = {"up": "32", "redis": "31", "migrate": "34", "api": "36", "worker": "33", "ui": "35"}


class LaunchFailed(RuntimeError):
    """A child exited on its own or a part was not ready in time; the message names it."""


class Interrupted(Exception):
    """A stop was requested (Ctrl-C, SIGTERM or SIGHUP) while waiting."""


def imgclf_command() -> list[str]:
    """The `imgclf` script beside this interpreter (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("imgclf")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("imgclf")
    if found:
        return [found]
    return [sys.executable, "-c", "from imgclf.cli import app; app()"]


def setting_text(value: object) -> str:
    """A setting's value as its IMGCLF_ environment variable spells it."""
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        value = reveal()
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def environment(settings: Mapping[str, object], *, clean: bool = False) -> dict[str, str]:
    """This process's environment plus ``settings`` as IMGCLF_ variables; ``clean`` leaves out
    the IMGCLF_ variables it had, so a developer's own settings cannot leak into a test."""
    base = {k: v for k, v in os.environ.items() if not (clean and k.startswith("IMGCLF_"))}
    return base | {f"IMGCLF_{name.upper()}": setting_text(v) for name, v in settings.items()}


def settings_environment(settings: Settings) -> dict[str, str]:
    """``environment()`` with the settings that differ from what the environment gives."""
    try:
        from_environment: Settings | None = Settings()
    except ValidationError:
        from_environment = None
    changed = {
        name: getattr(settings, name)
        for name in Settings.model_fields
        if from_environment is None or getattr(settings, name) != getattr(from_environment, name)
    }
    return environment(changed)


class LogPrinter:
    """Writes each child's lines behind its name, coloured when the output is a terminal."""

    def __init__(self, stream: TextIO, names: list[str]) -> None:
        self.stream = stream
        self.width = max(len(name) for name in names)
        self.colour = stream.isatty() and "NO_COLOR" not in os.environ
        self._lock = threading.Lock()

    def write(self, name: str, line: str) -> None:
        prefix = f"{name:<{self.width}} | "
        if self.colour:
            prefix = f"\x1b[{_COLOURS.get(name.split('-')[0], '37')}m{prefix}\x1b[0m"
        # A closed terminal or pipe must not stop the relay: children would block on a full pipe.
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.stream.write(prefix + line + "\n")
            self.stream.flush()


class Child:
    """One command in a session of its own. Its output goes to a ``LogPrinter`` (line by line,
    behind its name), is appended to a file, or is dropped (``None``)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        output: LogPrinter | Path | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.name, self.argv, self.env, self.output, self.cwd = name, list(argv), env, output, cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._relay: threading.Thread | None = None

    def start(self) -> Child:
        with contextlib.ExitStack() as files:
            stdout: IO[bytes] | int = subprocess.DEVNULL
            if isinstance(self.output, LogPrinter):
                stdout = subprocess.PIPE
            elif self.output is not None:
                stdout = files.enter_context(self.output.open("ab"))
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.process.stdout is not None:
            self._relay = threading.Thread(
                target=self._relay_output, args=(self.process.stdout,), daemon=True
            )
            self._relay.start()
        return self

    def _relay_output(self, output: IO[bytes]) -> None:
        for raw in output:
            self._say(self.name, raw.decode(errors="replace").rstrip())

    def _say(self, name: str, line: str) -> None:
        if isinstance(self.output, LogPrinter):
            self.output.write(name, line)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the child's whole process group, wait, then SIGKILL whatever is left."""
        if self.process is None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        if not self._wait_gone(grace_s):
            self._say("up", f"{self.name} did not stop within {grace_s:g} s; killing it")
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(5)
        if self._relay is not None:
            self._relay.join(2)

    def _wait_gone(self, timeout_s: float) -> bool:
        """Wait until the child and every process of its group have exited."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not _group_alive(self.pid):
                return True
            time.sleep(0.05)
        return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group; zombies wait for their reaper."""
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def http_get(
    url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own http URL
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError):
        return 0, b""


def api_ready(url: str, workers: int = 0) -> Callable[[], bool]:
    """``/health/ready`` answers 200, and with ``workers``: that many worker processes report
    alive (ready needs only one)."""

    def ready() -> bool:
        status, body = http_get(f"{url}/health/ready", timeout_s=3)
        if status != 200:
            return False
        return workers == 0 or int(json.loads(body)["checks"].get("workers", 0)) >= workers

    return ready


def check_children(children: Sequence[Child]) -> None:
    for child in children:
        code = child.exit_code()
        if code is not None:
            raise LaunchFailed(f"{child.name} exited unexpectedly with code {code}")


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
    children: Sequence[Child] = (),
    stop: threading.Event | None = None,
) -> None:
    """Poll ``ready`` until true; ``LaunchFailed`` as soon as one of ``children`` exits or when
    ``timeout_s`` passes, ``Interrupted`` when ``stop`` is set."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout_s
    while True:
        if stop.is_set():
            raise Interrupted
        check_children(children)
        if ready():
            return
        if time.monotonic() > deadline:
            raise LaunchFailed(f"{what} was not ready after {timeout_s:g} s")
        stop.wait(0.2)


class LocalStack:
    """`imgclf serve` on a free loopback port; with ``workers``, the Redis mode: `imgclf worker
    --processes N` beside ``redis_url`` or a throwaway redis-server. ``with LocalStack(...) as
    stack``: ready, every worker alive. ``settings`` become IMGCLF_ variables; a developer's own
    queue and database are never used. Logs go to ``log_dir`` (dropped without one)."""

    def __init__(
        self,
        *,
        workers: int = 0,
        redis_url: str | None = None,
        log_dir: Path | None = None,
        ready_timeout_s: float = 120.0,
        **settings: object,
    ) -> None:
        self.workers, self.redis_url, self.log_dir = workers, redis_url, log_dir
        self.ready_timeout_s = ready_timeout_s
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.children: list[Child] = []
        self.pids: dict[str, int] = {}
        self.redis: RedisServer | None = None
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> LocalStack:
        self._data_dir = tempfile.TemporaryDirectory(prefix="imgclf-stack-")
        if self.workers and self.redis_url is None:
            self.redis = RedisServer().start()
            self.redis_url = self.redis.url
            assert self.redis.process is not None
            self.pids["redis"] = self.redis.process.pid
        self.env = environment(
            {
                "data_dir": self._data_dir.name,
                "port": self.port,
                "access_log": False,
                "queue_url": self.redis_url if self.workers else "",
                "database_url": "",
                **self.settings,
            }
        )
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.workers:
            self._spawn("worker", "worker", "--processes", str(self.workers))
        self._spawn("api", "serve")
        ready = api_ready(self.url, self.workers)
        wait_until(ready, f"the API at {self.url}", self.ready_timeout_s, self.children)
        return self

    def _spawn(self, name: str, *args: str) -> None:
        log = None if self.log_dir is None else self.log_dir / f"{name}.log"
        assert self._data_dir is not None
        # Run in the data folder: no developer's .env file leaks in.
        child = Child(name, [*imgclf_command(), *args], self.env, log, cwd=self._data_dir.name)
        self.children.append(child.start())
        self.pids[name] = child.pid

    def login(self, email: str = "admin@example.com", password: str = "admin") -> str:  # noqa: S107
        """An access token from ``/login`` (the development admin by default)."""
        form = urllib.parse.urlencode({"username": email, "password": password}).encode()
        request = urllib.request.Request(f"{self.url}/login", data=form)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(json.loads(response.read())["access_token"])

    def stop(self) -> None:
        for child in reversed(self.children):  # the API before the workers (they drain)
            child.stop()
        if self.redis is not None:
            self.redis.stop()
        if self._data_dir is not None:
            self._data_dir.cleanup()

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()
