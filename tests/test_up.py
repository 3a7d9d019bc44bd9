"""`imgclf up` as a user runs it: a real process group on free ports, used over HTTP, stopped."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from imgclf.launcher import Child, LogPrinter
from imgclf.localservers import PostgresServer, free_port
from tests.conftest import unavailable

DOG_JPEG = Path(__file__).parent / "data" / "dog.jpeg"
IMGCLF = str(Path(sys.executable).with_name("imgclf"))
READY_LINE = "Press Ctrl-C to stop."

pytestmark = pytest.mark.slow


class UpProcess:
    """`imgclf up ...` with its output collected; knows every process of its group."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [IMGCLF, "up", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self.ready.set()
        self.ready.set()  # output ended: the group is gone, ready or not

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout_s: float = 120) -> None:
        self.ready.wait(timeout_s)
        assert self.process.poll() is None, f"imgclf up exited early:\n{self.output}"
        assert READY_LINE in self.output, f"imgclf up not ready in {timeout_s} s:\n{self.output}"

    def group(self) -> list[psutil.Process]:
        children: list[psutil.Process] = psutil.Process(self.process.pid).children(recursive=True)
        return children

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture
def start_up() -> Iterator[type[UpProcess]]:
    started: list[UpProcess] = []

    class Tracked(UpProcess):
        def __init__(self, args: list[str], env: dict[str, str]) -> None:
            super().__init__(args, env)
            started.append(self)

    yield Tracked
    for up in started:
        leftovers = up.group() if up.process.poll() is None else []
        up.kill()
        for process in leftovers:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue


def test_up_redis_workers_postgres_serves_and_stops_cleanly(
    start_up: type[UpProcess], postgres_server: PostgresServer, model_dir: Path
) -> None:
    port = free_port()
    env = {
        "IMGCLF_DATABASE_URL": postgres_server.create_database(f"up_{os.getpid()}"),
        "IMGCLF_PORT": str(port),
        "IMGCLF_MODEL_DIR": str(model_dir),
        "IMGCLF_MODEL_THREADS": "1",
        "IMGCLF_WORKER_HEARTBEAT_S": "0.5",
    }
    up = start_up(["--redis", "--workers", "2", "--no-ui"], env)
    up.wait_ready()
    base = f"http://127.0.0.1:{port}"
    assert f"imgclf API on {base}" in up.output
    assert "Admin login: admin@example.com" in up.output
    for name in ("redis", "worker", "api"):
        assert any(line.startswith(f"{name} ") and " | " in line for line in up.lines), name

    with httpx.Client(base_url=base, timeout=30) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["workers"] == 2
        user = {"name": "Ada", "email": "ada@example.com", "password": "long enough pw"}
        assert client.post("/user/", json=user).status_code == 201
        form = {"username": user["email"], "password": user["password"]}
        login = client.post("/login", data=form)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
        predicted = client.post("/model/predict", files=files, headers=headers)
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert body["prediction"] == "Eskimo_dog"
        feedback = {
            "feedback": "right",
            "score": body["score"],
            "predicted_class": body["prediction"],
            "image_file_name": body["image_file_name"],
            "prediction_id": body["prediction_id"],
        }
        assert client.post("/feedback/", json=feedback, headers=headers).status_code == 201

    group = up.group()
    names = [" ".join(p.cmdline()) for p in group]
    assert any("redis-server" in name for name in names), names
    assert sum("imgclf.worker" in name for name in names) == 2, names
    assert up.interrupt() == 0, up.output
    assert still_running(group) == [], up.output


def healthcheck(role: str, **env: str) -> int:
    """The containers' health check script, run against this machine's servers."""
    script = Path(__file__).parents[1] / "deploy" / "healthcheck.py"
    command = [sys.executable, str(script), role]
    return subprocess.run(command, env={**os.environ, **env}, timeout=30, check=False).returncode


def test_up_default_starts_api_and_ui_and_stops_cleanly(
    start_up: type[UpProcess], model_dir: Path
) -> None:
    port, ui_port = free_port(), free_port()
    env = {"IMGCLF_PORT": str(port), "IMGCLF_UI_PORT": str(ui_port)}
    up = start_up([], {**env, "IMGCLF_MODEL_DIR": str(model_dir)})
    up.wait_ready()
    assert f"imgclf API on http://127.0.0.1:{port}" in up.output
    assert f"imgclf UI  on http://127.0.0.1:{ui_port}" in up.output
    assert "Queue: embedded" in up.output
    ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert healthcheck("api", **env) == 0
    assert healthcheck("ui", **env) == 0
    group = up.group()
    streamlit = next(p for p in group if "page_server" in " ".join(p.cmdline()))
    assert streamlit.environ()["IMGCLF_API_URL"] == f"http://127.0.0.1:{port}"
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(60) == 0, up.output
    assert still_running(group) == []
    assert healthcheck("api", **env) == 1
    assert healthcheck("ui", **env) == 1


def test_up_stops_the_group_when_a_child_dies(start_up: type[UpProcess], model_dir: Path) -> None:
    port = free_port()
    up = start_up(
        ["--redis", "--no-ui"], {"IMGCLF_PORT": str(port), "IMGCLF_MODEL_DIR": str(model_dir)}
    )
    up.wait_ready()
    group = up.group()
    redis_server = next(p for p in group if "redis-server" in " ".join(p.cmdline()))
    redis_server.kill()
    assert up.process.wait(60) == 1
    assert "redis exited unexpectedly" in up.output
    assert still_running(group) == []


def test_up_refuses_a_port_in_use(start_up: type[UpProcess]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = start_up(["--no-ui"], {"IMGCLF_PORT": str(port)})
        assert up.process.wait(30) == 1
    assert f"port {port} is in use" in up.output


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", grandchild])
print("started", flush=True)
time.sleep(600)
"""


def test_stop_kills_a_group_that_ignores_sigterm() -> None:
    output = io.StringIO()
    log = LogPrinter(output, ["stubborn"])
    child = Child("stubborn", [sys.executable, "-c", STUBBORN], dict(os.environ), log)
    child.start()
    deadline = time.monotonic() + 20
    while "started" not in output.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    leader = psutil.Process(child.pid)
    group = [leader, *leader.children(recursive=True)]
    assert len(group) == 2

    child.stop(grace_s=1)

    assert still_running(group) == []
    assert "stubborn | started" in output.getvalue()
    assert "stubborn did not stop within 1 s; killing it" in output.getvalue()


DEPLOY = Path(__file__).parents[1] / "deploy"


def prometheus_query(url: str, expr: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def scalar(url: str, expr: str) -> float:
    result = prometheus_query(url, expr)
    return float(result[0]["value"][1]) if result else float("nan")  # type: ignore[index]


def until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen in {timeout_s:.0f} s"
        time.sleep(0.5)


def test_monitor_scrapes_every_process_and_fires_when_the_workers_stop(
    start_up: type[UpProcess], model_dir: Path, tmp_path: Path
) -> None:
    """A real Prometheus (Debian's) beside `imgclf up --redis --workers 2` with two API
    processes: it counts the requests sent, sees the batch sizes, every dashboard query names
    series that exist, and the no-live-worker alert fires once the workers are frozen. The
    rules are deploy/prometheus's with their `for:` shortened to seconds (the durations
    themselves are unit-tested by promtool)."""
    if shutil.which("prometheus") is None:
        unavailable("prometheus is missing (Debian: apt-get install prometheus)")
    rules = tmp_path / "rules.yml"
    rules.write_text(re.sub(r"for: \d+m", "for: 2s", (DEPLOY / "prometheus/rules.yml").read_text()))
    port, prometheus_port = free_port(), free_port()
    env = {
        "IMGCLF_PORT": str(port),
        "IMGCLF_WEB_CONCURRENCY": "2",
        "IMGCLF_MODEL_DIR": str(model_dir),
        "IMGCLF_MODEL_THREADS": "1",
        "IMGCLF_WORKER_HEARTBEAT_S": "0.5",
        "IMGCLF_CACHE": "false",
    }
    monitor = ["--monitor", "--prometheus-port", str(prometheus_port), "--rules", str(rules)]
    up = start_up(["--redis", "--workers", "2", "--no-ui", *monitor], env)
    up.wait_ready()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    assert f"Prometheus on {prometheus}" in up.output

    sent = 24
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        form = {"username": "admin@example.com", "password": "admin"}
        headers = {
            "Authorization": f"Bearer {client.post('/login', data=form).json()['access_token']}"
        }
        files = {"file": ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg")}
        for _ in range(sent):
            assert client.post("/model/predict", files=files, headers=headers).status_code == 200

    predicted = 'sum(imgclf_http_requests_total{route="/model/predict",status="200"})'
    until(lambda: scalar(prometheus, predicted) == sent, f"{sent} predictions in Prometheus")
    # The workers' exporters are scraped on their own schedule: wait for their counts too.
    computed = 'sum(imgclf_worker_jobs_total{outcome="ok"})'
    until(lambda: scalar(prometheus, computed) == sent, f"{sent} jobs in the workers' series")
    until(lambda: scalar(prometheus, "sum(imgclf_batch_size_count)") == sent, "batch sizes")
    assert scalar(prometheus, 'count(up{job="imgclf-worker"} == 1)') == 2

    names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
    dashboard = json.loads((DEPLOY / "grafana/imgclf-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            prometheus_query(prometheus, target["expr"])  # valid PromQL
            named = set(re.findall(r"\b(?:imgclf|process)_[a-z_]+", target["expr"]))
            assert named <= names, (panel["title"], named - names)

    workers = [p for p in up.group() if "imgclf.worker" in " ".join(p.cmdline())]
    for worker in workers:
        worker.suspend()  # heartbeats stop: the API soon counts no live worker
    try:
        firing = 'ALERTS{alertname="ImgclfNoLiveWorker",alertstate="firing"}'
        until(lambda: bool(prometheus_query(prometheus, firing)), "ImgclfNoLiveWorker firing")
    finally:
        for worker in workers:
            worker.resume()
    assert up.interrupt() == 0, up.output
