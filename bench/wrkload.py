"""Load from wrk (C, one thread, epoll): its own CPU is a few percent of a core at these rates, so
the service, not the client, is what gets measured. bench/wrk/upload.lua POSTs one prepared
multipart upload; its done() prints wrk's figures as JSON. wrk's own CPU time is measured too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk" / "upload.lua"


@dataclass(frozen=True)
class Upload:
    """One multipart/form-data request body (field ``file``), and how to send it."""

    body: bytes
    content_type: str
    authorization: str = ""

    @classmethod
    def jpeg(cls, content: bytes, token: str = "", filename: str = "photo.jpg") -> Upload:
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return cls(
            body,
            f"multipart/form-data; boundary={boundary}",
            f"Bearer {token}" if token else "",
        )


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late: int
    client_cpu_s: float
    command: str

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def throughput(self) -> float:
        """Answers with a 2xx status per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else math.nan

    @property
    def client_cpu_share(self) -> float:
        """wrk's CPU time over the run's wall time: the share of one core the client used."""
        return self.client_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.non_2xx + self.socket_errors + self.timeouts


def ensure_wrk() -> str:
    """The path of wrk, installed from Debian's packages (as root) when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("wrk is missing: install it with `sudo apt-get install -y wrk`.")
    print("installing wrk: apt-get install -y wrk", flush=True)
    quiet = {"stdout": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode:
        subprocess.run(["apt-get", "update"], check=True, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, **quiet)
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get installed no wrk on the PATH.")
    return found


def run_wrk(
    url: str,
    upload: Upload,
    *,
    connections: int,
    seconds: float,
    rate: float = 0.0,
    warmup_s: float = 2.0,
) -> WrkResult:
    """A warm-up run (its figures dropped), then the measured one. ``rate`` > 0: open loop.

    Closed loop: the measured run's connections start one after another, spread over the
    warm-up's median latency, as they are spread in a steady stream of requests; all of them at
    once is a burst of uploads no steady load sends, and its answers (a few dozen of a run's
    thousand or two) were most of the p99, which is the steady load's tail to measure."""
    wrk = ensure_wrk()
    with tempfile.NamedTemporaryFile(prefix="imgclf-wrk-", suffix=".body") as body:
        body.write(upload.body)
        body.flush()
        stagger_ms = 0.0
        if warmup_s > 0:
            warm = _wrk(wrk, url, body.name, upload, connections, warmup_s, rate)
            if rate <= 0 and connections > 1:
                stagger_ms = warm.p50_ms / connections
        return _wrk(wrk, url, body.name, upload, connections, seconds, rate, stagger_ms)


def _wrk(
    wrk: str,
    url: str,
    body: str,
    upload: Upload,
    connections: int,
    seconds: float,
    rate: float,
    stagger_ms: float = 0.0,
) -> WrkResult:
    duration = max(1, math.ceil(seconds))
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
        "--",
        body,
        upload.content_type,
        upload.authorization,
        f"{rate:.3f}",
        f"{stagger_ms:.3f}",
        str(connections),
    ]
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        # wait4 hands back the child's own CPU time (user + system), which is what wrk cost.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
    figures = next((line for line in text.splitlines() if line.startswith("wrk-json ")), None)
    if process.returncode != 0 or figures is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    data = json.loads(figures.removeprefix("wrk-json "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx=data["non_2xx"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"],
        timeouts=data["timeouts"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        late=data["late"],
        client_cpu_s=usage.ru_utime + usage.ru_stime,
        command=wrk_command_line(connections, duration, rate),
    )


def wrk_command_line(connections: int, seconds: int, rate: float = 0.0) -> str:
    """The command as a person would type it (body file and token left as names; STAGGER_MS:
    the warm-up's median latency over the number of connections)."""
    loop = f"{rate:g}" if rate > 0 else f"0 STAGGER_MS {connections}"
    return (
        f"wrk -t1 -c{connections} -d{seconds}s --timeout 10s -s bench/wrk/upload.lua URL -- "
        f'BODY "multipart/form-data; boundary=..." "Bearer TOKEN" {loop}'
    )
