"""`imgclf up`: the API, the UI, Redis and model workers as one supervised group of processes.

Each child runs in a process group (a session) of its own, so a stop reaches what it started too:
uvicorn's worker processes, `imgclf worker`'s processes, Streamlit. Children do not see the
terminal's Ctrl-C themselves; `up` stops them in order instead, the UI and the API first, then
the workers (they drain), then Redis: SIGTERM to the whole group, a grace period, then SIGKILL.
A child that exits on its own stops the group, and `up` exits non-zero naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, TextIO

from pydantic import ValidationError

from imgclf.localservers import ServerUnavailable, free_port, redis_server_binary
from imgclf.settings import Settings

STOP_GRACE_S = 20.0
READY_TIMEOUT_S = 180.0
_COLOURS = {"up": "32", "redis": "31", "migrate": "34", "api": "36", "worker": "33", "ui": "35"}


class GroupFailed(Exception):
    """A child exited on its own or never became ready; the message names it."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived."""


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
    """One command, started in a session of its own, its output relayed line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: LogPrinter) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self._relay: threading.Thread | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output = self.process.stdout
        assert output is not None
        self._relay = threading.Thread(target=self._relay_output, args=(output,), daemon=True)
        self._relay.start()

    def _relay_output(self, output: IO[bytes]) -> None:
        for raw in output:
            self.log.write(self.name, raw.decode(errors="replace").rstrip())

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
            self.log.write("up", f"{self.name} did not stop within {grace_s:g} s; killing it")
            _signal_group(self.pid, signal.SIGKILL)
            self._wait_gone(5)
        if self._relay is not None:
            self._relay.join(2)

    def _wait_gone(self, timeout_s: float) -> bool:
        """Wait until the child and every process of its group have exited."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not _group_members(self.pid):
                return True
            time.sleep(0.05)
        return False


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; zombies wait only for their reaper."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may hold spaces: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _imgclf_command() -> list[str]:
    """The `imgclf` script beside this interpreter (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("imgclf")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("imgclf")
    if found:
        return [found]
    return [sys.executable, "-c", "from imgclf.cli import app; app()"]


def _settings_environment(settings: Settings) -> dict[str, str]:
    """Settings that differ from what the environment gives, as IMGCLF_ variables for children."""
    try:
        from_environment: Settings | None = Settings()
    except ValidationError:
        from_environment = None
    variables = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if from_environment is not None and value == getattr(from_environment, name):
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        variables[f"IMGCLF_{name.upper()}"] = text
    return variables


def _local_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine, URL-ready."""
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - an address to reach, not to bind
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _api_environment(env: dict[str, str], settings: Settings, with_ui: bool) -> dict[str, str]:
    """With our UI, the API believes the client address the UI names (each browser's, for its
    login budgets), as it calls from this machine; an operator's IMGCLF_TRUSTED_PROXIES wins.
    Anything else on this host may then name an address too: the threat model trusts it."""
    if not with_ui or settings.trusted_proxies:
        return env
    host = _local_host(settings.host).strip("[]")
    peers = ["127.0.0.1", "::1"] if host == "localhost" else [host]
    return {**env, "IMGCLF_TRUSTED_PROXIES": json.dumps(peers)}


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our own http URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _redis_command(port: int, directory: Path) -> list[str]:
    # The queue is transient: a caller whose job is lost times out and retries, so no RDB
    # snapshots and no append-only file.
    return [
        redis_server_binary(),
        *("--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"),
        *("--save", "", "--appendonly", "no", "--dir", str(directory)),
    ]


def _worker_environment(env: dict[str, str], workers: int, settings: Settings) -> dict[str, str]:
    """Workers on one machine share its cores: unless told otherwise, each gets its share."""
    return {**env, **settings.worker_share_environment(workers)}


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, request_stop) for signum in handled}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Group:
    """The running children, watched together."""

    def __init__(self, log: LogPrinter, stop: threading.Event) -> None:
        self.log, self.stop_requested = log, stop
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def check(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise GroupFailed(f"{child.name} exited unexpectedly with code {code}")

    def wait_for(self, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            if ready():
                return
            if time.monotonic() > deadline:
                raise GroupFailed(f"{what} was not ready after {timeout_s:g} s")
            self.stop_requested.wait(0.2)

    def run_once(self, child: Child) -> None:
        """A one-shot step (migrations): it must finish, and succeed, before the next starts."""
        child.start()
        try:
            while (code := child.exit_code()) is None:
                if self.stop_requested.wait(0.2):
                    raise Interrupted
        finally:
            child.stop()
        if code != 0:
            raise GroupFailed(f"{child.name} failed with code {code}")

    def watch(self) -> None:
        while True:
            self.check()
            self.stop_requested.wait(0.5)

    def stop_all(self) -> None:
        # The UI and the API before the workers (they drain their jobs), Redis last.
        for child in reversed(self.children):
            child.stop()


def run_group(
    settings: Settings,
    *,
    redis: bool = False,
    workers: int = 0,
    with_ui: bool = True,
    stream: TextIO | None = None,
) -> int:
    """Start the group, wait for each part in order, print the addresses, supervise until
    interrupted (0) or until a child fails (1)."""
    from imgclf.serving import login_banner

    redis = redis or workers > 0  # workers read jobs from Redis
    start_redis = redis and not settings.queue_url
    names = ["up", "api", "redis", "migrate"] + (["worker"] if workers else []) + ["ui"]
    log = LogPrinter(stream or sys.stdout, names)
    env = {**os.environ, **_settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    imgclf = _imgclf_command()
    host = _local_host(settings.host)
    api_url = f"http://{host}:{settings.port}"
    busy = [p for p in [settings.port] + ([settings.ui_port] if with_ui else []) if _port_open(p)]
    if busy:
        log.write("up", f"port {busy[0]} is in use; set IMGCLF_PORT / IMGCLF_UI_PORT to others")
        return 1

    with _stop_on_signals() as stop, tempfile.TemporaryDirectory(prefix="imgclf-up-") as scratch:
        group = Group(log, stop)
        try:
            if start_redis:
                port = free_port()
                env["IMGCLF_QUEUE_URL"] = f"redis://127.0.0.1:{port}/0"
                group.start(Child("redis", _redis_command(port, Path(scratch)), env, log))
                group.wait_for(lambda: _port_open(port), f"redis on port {port}", 30)
            elif redis:
                env["IMGCLF_QUEUE_URL"] = settings.queue_url
            queue_url = env.get("IMGCLF_QUEUE_URL", "")
            if settings.is_production:
                # Production API processes only check the schema; migrate once, up front.
                group.run_once(Child("migrate", [*imgclf, "populate"], env, log))
            if workers:
                command = [*imgclf, "worker", "--processes", str(workers)]
                worker_env = _worker_environment(env, workers, settings)
                group.start(Child("worker", command, worker_env, log))
            group.start(
                Child("api", [*imgclf, "serve"], _api_environment(env, settings, with_ui), log)
            )
            # With no worker of ours in Redis mode, readiness waits on workers we did not start.
            probe = "/health/live" if queue_url and not workers else "/health/ready"
            group.wait_for(lambda: _http_ok(api_url + probe), f"api ({probe})", READY_TIMEOUT_S)
            if with_ui:
                ui_env = {**env, "IMGCLF_API_URL": api_url}
                command = [*imgclf, "ui", "--api-url", api_url, "--port", str(settings.ui_port)]
                group.start(Child("ui", command, ui_env, log))
                group.wait_for(lambda: _port_open(settings.ui_port), "ui", READY_TIMEOUT_S)
            _print_banner(log, settings, login_banner(settings), queue_url, workers, with_ui)
            group.watch()
        except Interrupted:
            log.write("up", "stopping")
            code = 0
        except (GroupFailed, ServerUnavailable) as failure:
            log.write("up", f"{failure}; stopping the group")
            code = 1
        finally:
            group.stop_all()
    log.write("up", "stopped" if code == 0 else "stopped after a failure")
    return code


def _print_banner(
    log: LogPrinter,
    settings: Settings,
    api_banner: str,
    queue_url: str,
    workers: int,
    with_ui: bool,
) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    queue = f"Redis at {queue_url}" if queue_url else "embedded (in-process model worker)"
    if workers:
        queue += f", {workers} worker process{'es' if workers > 1 else ''}"
    lines = [*api_banner.splitlines()]
    if with_ui:
        lines.insert(1, f"imgclf UI  on http://{_local_host(settings.host)}:{settings.ui_port}")
    lines += [f"Queue: {queue}", f"Database: {database}", "Press Ctrl-C to stop."]
    for line in lines:
        log.write("up", line)
