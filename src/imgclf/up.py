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
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from imgclf.launcher import (
    Child,
    Interrupted,
    LaunchFailed,
    LogPrinter,
    api_ready,
    check_children,
    http_get,
    imgclf_command,
    settings_environment,
    wait_until,
)
from imgclf.localservers import ServerUnavailable, free_port, port_open, redis_command
from imgclf.monitoring import (
    default_rules,
    free_ports,
    prometheus_command,
    prometheus_config,
)
from imgclf.settings import Settings

READY_TIMEOUT_S = 180.0


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

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children.append(Child(name, argv, env, self.log).start())

    def wait_for(self, ready: Callable[[], bool], what: str, timeout_s: float) -> None:
        wait_until(ready, what, timeout_s, self.children, self.stop_requested)

    def run_once(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """A one-shot step (migrations): it must finish, and succeed, before the next starts."""
        child = Child(name, argv, env, self.log).start()
        try:
            while (code := child.exit_code()) is None:
                if self.stop_requested.wait(0.2):
                    raise Interrupted
        finally:
            child.stop()
        if code != 0:
            raise LaunchFailed(f"{name} failed with code {code}")

    def watch(self) -> None:
        while not self.stop_requested.wait(0.5):
            check_children(self.children)
        raise Interrupted

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
    monitor: MonitorOptions | None = None,
) -> int:
    """Start the group, wait for each part in order, print the addresses, supervise until
    interrupted (0) or until a child fails (1)."""
    from imgclf.serving import login_banner

    redis = redis or workers > 0  # workers read jobs from Redis
    names = ["up", "api", "redis", "migrate"] + (["worker"] if workers else []) + ["ui"]
    names += ["prometheus"] if monitor else []
    log = LogPrinter(stream or sys.stdout, names)
    busy = [p for p in [settings.port] + ([settings.ui_port] if with_ui else []) if port_open(p)]
    if busy:
        log.write("up", f"port {busy[0]} is in use; set IMGCLF_PORT / IMGCLF_UI_PORT to others")
        return 1

    with _stop_on_signals() as stop, tempfile.TemporaryDirectory(prefix="imgclf-up-") as scratch:
        group = Group(log, stop)
        try:
            queue_url = _start_in_order(
                group, settings, Path(scratch), redis, workers, with_ui, monitor
            )
            banner = login_banner(settings)
            if monitor:  # before the banner's last line, which says the group is ready
                banner += f"\nPrometheus on http://127.0.0.1:{monitor.port}"
            _print_banner(log, settings, banner, queue_url, workers, with_ui)
            group.watch()
        except Interrupted:
            log.write("up", "stopping")
            code = 0
        except (LaunchFailed, ServerUnavailable) as failure:
            log.write("up", f"{failure}; stopping the group")
            code = 1
        finally:
            group.stop_all()
    log.write("up", "stopped" if code == 0 else "stopped after a failure")
    return code


def _start_in_order(
    group: Group,
    settings: Settings,
    scratch: Path,
    redis: bool,
    workers: int,
    with_ui: bool,
    monitor: MonitorOptions | None = None,
) -> str:
    """Redis, migrations, workers, the API, Prometheus and the UI, each ready before the next
    starts; returns the queue's URL ("" when embedded)."""
    env = {**settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    worker_env: dict[str, str] = {}
    if monitor:
        token = settings.metrics_token.get_secret_value() or secrets.token_urlsafe(24)
        env["IMGCLF_METRICS_TOKEN"] = token
        if workers:
            first = free_ports(workers)
            worker_env["IMGCLF_WORKER_METRICS_PORT"] = str(first)
            monitor.worker_ports = list(range(first, first + workers))
    imgclf = imgclf_command()
    api_url = f"http://{_local_host(settings.host)}:{settings.port}"
    if redis and not settings.queue_url:
        port = free_port()
        env["IMGCLF_QUEUE_URL"] = f"redis://127.0.0.1:{port}/0"
        group.start("redis", redis_command(port, scratch), env)
        group.wait_for(lambda: port_open(port), f"redis on port {port}", 30)
    elif redis:
        env["IMGCLF_QUEUE_URL"] = settings.queue_url
    queue_url = env.get("IMGCLF_QUEUE_URL", "")
    if settings.is_production:
        # Production API processes only check the schema; migrate once, up front.
        group.run_once("migrate", [*imgclf, "populate"], env)
    if workers:
        command = [*imgclf, "worker", "--processes", str(workers)]
        group.start("worker", command, _worker_environment(env, workers, settings) | worker_env)
    group.start("api", [*imgclf, "serve"], _api_environment(env, settings, with_ui))
    if queue_url and not workers:
        # Readiness would wait on workers we did not start: the API answering is enough.
        live = lambda: http_get(api_url + "/health/live", 3)[0] == 200  # noqa: E731
        group.wait_for(live, "api (/health/live)", READY_TIMEOUT_S)
    else:  # every worker we started, not only the first, before the group is called ready
        group.wait_for(api_ready(api_url, workers), "api (/health/ready)", READY_TIMEOUT_S)
    if monitor:
        _start_prometheus(
            group, scratch, f"{_local_host(settings.host)}:{settings.port}", env, monitor
        )
    if with_ui:
        ui_env = {**env, "IMGCLF_API_URL": api_url}
        command = [*imgclf, "ui", "--api-url", api_url, "--port", str(settings.ui_port)]
        group.start("ui", command, ui_env)
        group.wait_for(lambda: port_open(settings.ui_port), "ui", READY_TIMEOUT_S)
    return queue_url


@dataclass
class MonitorOptions:
    """`--monitor`: Prometheus's port, the rules it evaluates (deploy/prometheus's by default)."""

    port: int = 9090
    rules: Path | None = field(default_factory=default_rules)
    worker_ports: list[int] = field(default_factory=list)


def _start_prometheus(
    group: Group, scratch: Path, api: str, env: dict[str, str], monitor: MonitorOptions
) -> None:
    config = prometheus_config(
        scratch, api, env["IMGCLF_METRICS_TOKEN"], monitor.worker_ports, monitor.rules
    )
    data = scratch / "prometheus-data"
    group.start("prometheus", prometheus_command(config, data, monitor.port), env)
    ready = f"http://127.0.0.1:{monitor.port}/-/ready"
    group.wait_for(lambda: http_get(ready, 3)[0] == 200, "prometheus", 60)


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
