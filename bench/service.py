"""The service against the raw pipeline, side by side in one run (`make bench`).

Raw pipeline: decode + classify one 640x480 JPEG at a time in a tight loop, in one process.
Then the HTTP service, started for real (`imgclf serve`, and `imgclf worker` + redis-server for
the Redis mode), loaded by a lean asyncio client on the same machine. Prints a markdown table
and writes it into docs/benchmarks.md ("## Service").
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, closed_loop, multipart_request, open_loop

from imgclf.localservers import RedisServer, free_port, wait_for_port
from imgclf.model import ImageLimits, load_bundle
from imgclf.model.classifier import Classifier

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "tests" / "data" / "dog.jpeg"
MODEL_DIR = Path(os.environ.get("IMGCLF_MODEL_DIR", ROOT / "data/models/efficientnet-lite0"))
BIN = Path(sys.executable).parent


def photo_640x480() -> bytes:
    buffer = io.BytesIO()
    Image.open(DOG).convert("RGB").resize((640, 480), Image.Resampling.LANCZOS).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


def raw_pipeline(image: bytes, seconds: float) -> tuple[float, float]:
    """(images/s, median ms per image) of decode + classify, one at a time."""
    classifier = Classifier(load_bundle(MODEL_DIR))
    limits = ImageLimits()
    for _ in range(10):
        classifier.classify_bytes([image], limits)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        classifier.classify_bytes([image], limits)
        times.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    times.sort()
    return len(times) / elapsed, times[len(times) // 2] * 1000


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


@contextmanager
def running_service(
    *, batch: int, redis: bool = False, workers: int = 1, max_pending: int = 256
) -> Iterator[tuple[str, str]]:
    """Start the service for real; yield (predict URL, token)."""
    processes: list[subprocess.Popen[bytes]] = []
    server = RedisServer().start() if redis else None
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as data_dir:
        port = free_port()
        env = {
            **os.environ,
            "IMGCLF_DATA_DIR": data_dir,
            "IMGCLF_MODEL_DIR": str(MODEL_DIR),
            "IMGCLF_PORT": str(port),
            "IMGCLF_CACHE": "false",
            "IMGCLF_ACCESS_LOG": "false",
            "IMGCLF_MAX_BATCH_SIZE": str(batch),
            "IMGCLF_MAX_PENDING": str(max_pending),
        }
        if server is not None:
            env["IMGCLF_QUEUE_URL"] = server.url
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        try:
            processes.append(subprocess.Popen([BIN / "imgclf", "serve"], env=env, **quiet))
            if server is not None:
                processes.append(
                    subprocess.Popen(
                        [BIN / "imgclf", "worker", "--processes", str(workers)], env=env, **quiet
                    )
                )
            wait_for_port(port, 60, processes[0])
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while _get(f"{base}/health/ready")[0] != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the service never became ready")
                time.sleep(0.2)
            form = urllib.parse.urlencode({"username": "admin@example.com", "password": "admin"})
            request = urllib.request.Request(f"{base}/login", data=form.encode())  # noqa: S310
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                token = json.loads(response.read())["access_token"]
            yield f"{base}/model/predict", token
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
            if server is not None:
                server.stop()


def load(url: str, token: str, image: bytes, clients: int, seconds: float) -> LoadResult:
    request = multipart_request(url, token, "photo.jpg", image)
    return asyncio.run(closed_loop(url, request, clients, seconds))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


CONFIGURATIONS: list[tuple[str, dict[str, object]]] = [
    ("embedded, batch 16", {"batch": 16}),
    ("embedded, batch 1", {"batch": 1}),
    ("redis, 1 worker, batch 16", {"batch": 16, "redis": True}),
    ("redis, 1 worker, batch 1", {"batch": 1, "redis": True}),
    ("redis, 2 workers, batch 16", {"batch": 16, "redis": True, "workers": 2}),
]


@dataclass
class Figures:
    """Every round's measurement of one configuration, and its ratios to that round's raw loop."""

    runs: list[LoadResult] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def add(self, result: LoadResult, raw_rate: float) -> None:
        self.runs.append(result)
        self.ratios.append(result.throughput / raw_rate)

    @property
    def median_run(self) -> LoadResult:
        return sorted(self.runs, key=lambda run: run.throughput)[len(self.runs) // 2]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def percentile(self, q: float) -> float:
        return statistics.median(run.percentile(q) for run in self.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    image = photo_640x480()
    raw_rates: list[float] = []
    raw_times: list[float] = []
    figures: dict[str, Figures] = defaultdict(Figures)
    lone_overheads: list[float] = []

    # Every configuration once per round, each compared with a raw loop run just before it:
    # on a shared machine the speed of the cores drifts by tens of percent within minutes.
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}", flush=True)
        for name, options in CONFIGURATIONS:
            raw_rate, raw_ms = raw_pipeline(image, args.seconds / 2)
            raw_rates.append(raw_rate)
            raw_times.append(raw_ms)
            with running_service(**options) as (url, token):  # type: ignore[arg-type]
                result = load(url, token, image, args.clients, args.seconds)
                figures[name].add(result, raw_rate)
                if name == "embedded, batch 16":
                    lone = load(url, token, image, 1, args.seconds / 2)
                    figures["lone request"].add(lone, raw_rate)
                    lone_overheads.append(lone.percentile(50) - raw_ms)
                    request = multipart_request(url, token, "photo.jpg", image)
                    open_result = asyncio.run(
                        open_loop(url, request, 0.7 * result.throughput, args.seconds)
                    )
                    figures["open loop 70%"].add(open_result, raw_rate)
                    print(
                        f"  lone request: p50 {lone.percentile(50):.1f} ms "
                        f"({lone.percentile(50) - raw_ms:+.1f}); open loop at "
                        f"{0.7 * result.throughput:.0f}/s: p99 {open_result.percentile(99):.1f} ms",
                        flush=True,
                    )
            print(
                f"  {name}: {result.throughput:.1f} img/s ({result.throughput / raw_rate:.2f} "
                f"of the raw loop's {raw_rate:.1f} just before), p50 "
                f"{result.percentile(50):.1f} ms, statuses {result.statuses}",
                flush=True,
            )

    with running_service(batch=16, max_pending=8) as (url, token):
        overload = load(url, token, image, 64, args.seconds / 2)
    report(raw_rates, raw_times, figures, lone_overheads, overload, args)


def report(
    raw_rates: list[float],
    raw_times: list[float],
    figures: dict[str, Figures],
    lone_overheads: list[float],
    overload: LoadResult,
    args: argparse.Namespace,
) -> None:
    raw_rate, raw_ms = statistics.median(raw_rates), statistics.median(raw_times)
    table = [
        "| configuration | images/s | vs raw | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        f"| raw decode+classify loop | {raw_rate:.1f} | 1.00 | {raw_ms:.1f} |  |",
    ]
    rows = [(f"HTTP {name}, {args.clients} clients", name) for name, _ in CONFIGURATIONS]
    rows.append(("HTTP embedded, 1 client (lone request)", "lone request"))
    for label, name in rows:
        figure = figures[name]
        table.append(
            f"| {label} | {figure.median_run.throughput:.1f} | {figure.ratio:.2f} "
            f"| {figure.percentile(50):.1f} | {figure.percentile(99):.1f} |"
        )
    open_figure = figures["open loop 70%"]
    table.append(
        f"| HTTP embedded, open loop at 70% of the batch-16 peak "
        f"| {open_figure.median_run.throughput:.1f} |  | {open_figure.percentile(50):.1f} "
        f"| {open_figure.percentile(99):.1f} |"
    )
    embedded, redis_one = figures["embedded, batch 16"], figures["redis, 1 worker, batch 16"]
    redis_vs_embedded = statistics.median(
        redis / local for redis, local in zip(redis_one.ratios, embedded.ratios, strict=True)
    )
    batching = {
        mode: statistics.median(
            big / small
            for big, small in zip(
                figures[f"{mode}, batch 16"].ratios, figures[one].ratios, strict=True
            )
        )
        for mode, one in [
            ("embedded", "embedded, batch 1"),
            ("redis, 1 worker", "redis, 1 worker, batch 1"),
        ]
    }
    summary = [
        f"- embedded HTTP service / raw pipeline at {args.clients} clients: "
        f"**{embedded.ratio:.2f}** (target ≥ 0.90; per round {_listed(embedded.ratios)})",
        f"- Redis mode, 1 worker / embedded: **{redis_vs_embedded:.2f}** (median of the rounds' "
        "ratios; target ≥ 0.80)",
        f"- a lone request's p50 over one raw decode+classify: "
        f"**{statistics.median(lone_overheads):+.1f} ms** (target < 5 ms; per round "
        f"{', '.join(f'{value:+.1f}' for value in lone_overheads)})",
        f"- open loop at 70% of peak: p99 **{open_figure.percentile(99):.1f} ms** "
        "(target < 150 ms)",
        f"- what max batch 16 serves over max batch 1: embedded **{batching['embedded']:.2f}x**, "
        f"Redis with 1 worker **{batching['redis, 1 worker']:.2f}x**",
        f"- over capacity (64 clients, at most 8 pending): answers "
        f"{dict(sorted(overload.statuses.items()))}; the 503s came back in p50 "
        f"**{overload.percentile(50, 503):.1f} ms**, p99 **{overload.percentile(99, 503):.1f} ms** "
        "(target < 50 ms)",
    ]
    text = "\n".join([*table, "", *summary])
    print("\n" + text)
    if args.no_write:
        return
    section = (
        "## Service\n\n"
        f"Measured {date.today().isoformat()} on {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, by `make bench` (`bench/service.py`): "
        f"{args.rounds} rounds, each running every configuration for {args.seconds:g} s after a "
        f"2 s warm-up, right after {args.seconds / 2:g} s of the raw loop; each ratio is taken "
        "against that raw run, and the table holds medians over the rounds. Cache off, one "
        "640x480 JPEG, the client (bench/loadgen.py) on the same cores.\n\n" + text + "\n"
    )
    path = ROOT / "docs" / "benchmarks.md"
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    before, _, after = existing.partition("## Service\n")
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    path.write_text(before.rstrip() + "\n\n" + section + ("\n## " + rest if rest else ""))


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    main()
