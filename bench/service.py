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
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    image = photo_640x480()
    rows: list[tuple[str, str, str, str, str]] = []

    raw_rate, raw_ms = raw_pipeline(image, args.seconds)
    rows.append(("raw decode+classify loop", f"{raw_rate:.1f}", "1.00", f"{raw_ms:.1f}", ""))
    print(f"raw pipeline: {raw_rate:.1f} img/s, {raw_ms:.1f} ms per image", flush=True)

    figures: dict[str, LoadResult] = {}
    for name, options in [
        ("embedded, batch 16", {"batch": 16}),
        ("embedded, batch 1", {"batch": 1}),
        ("redis, 1 worker, batch 16", {"batch": 16, "redis": True}),
        ("redis, 1 worker, batch 1", {"batch": 1, "redis": True}),
        ("redis, 2 workers, batch 16", {"batch": 16, "redis": True, "workers": 2}),
    ]:
        with running_service(**options) as (url, token):  # type: ignore[arg-type]
            result = load(url, token, image, args.clients, args.seconds)
            figures[name] = result
            if name == "embedded, batch 16":
                lone = load(url, token, image, 1, args.seconds / 2)
                figures["lone request"] = lone
                peak = result.throughput
                request = multipart_request(url, token, "photo.jpg", image)
                figures["open loop 70%"] = asyncio.run(
                    open_loop(url, request, 0.7 * peak, args.seconds)
                )
        print(
            f"{name}: {result.throughput:.1f} img/s p50 {result.percentile(50):.1f} ms "
            f"p99 {result.percentile(99):.1f} ms statuses {result.statuses}",
            flush=True,
        )
        rows.append(
            (
                f"HTTP {name}, {args.clients} clients",
                f"{result.throughput:.1f}",
                f"{result.throughput / raw_rate:.2f}",
                f"{result.percentile(50):.1f}",
                f"{result.percentile(99):.1f}",
            )
        )

    with running_service(batch=16, max_pending=8) as (url, token):
        overload = load(url, token, image, 64, args.seconds / 2)

    lone = figures["lone request"]
    open_result = figures["open loop 70%"]
    rows.append(
        (
            "HTTP embedded, 1 client (lone request)",
            f"{lone.throughput:.1f}",
            f"{lone.throughput / raw_rate:.2f}",
            f"{lone.percentile(50):.1f}",
            f"{lone.percentile(99):.1f}",
        )
    )
    rows.append(
        (
            f"HTTP embedded, open loop at {0.7 * figures['embedded, batch 16'].throughput:.0f}"
            " req/s (70% of peak)",
            f"{open_result.throughput:.1f}",
            "",
            f"{open_result.percentile(50):.1f}",
            f"{open_result.percentile(99):.1f}",
        )
    )
    report(rows, raw_rate, raw_ms, figures, overload, args)


def report(
    rows: list[tuple[str, str, str, str, str]],
    raw_rate: float,
    raw_ms: float,
    figures: dict[str, LoadResult],
    overload: LoadResult,
    args: argparse.Namespace,
) -> None:
    embedded = figures["embedded, batch 16"]
    redis_one = figures["redis, 1 worker, batch 16"]
    lone = figures["lone request"]
    table = ["| configuration | images/s | vs raw | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    summary = [
        f"- embedded HTTP service / raw pipeline at {args.clients} clients: "
        f"**{embedded.throughput / raw_rate:.2f}** (target ≥ 0.90)",
        f"- Redis mode, 1 worker / embedded: **{redis_one.throughput / embedded.throughput:.2f}** "
        "(target ≥ 0.80)",
        f"- a lone request's p50 over one raw decode+classify: "
        f"**{lone.percentile(50) - raw_ms:+.1f} ms** (target < 5 ms)",
        f"- open loop at 70% of peak: p99 **{figures['open loop 70%'].percentile(99):.1f} ms** "
        "(target < 150 ms)",
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
        f"{args.seconds:g} s measured per run after a 2 s warm-up, cache off, one 640x480 JPEG, "
        "the client (bench/loadgen.py) on the same cores.\n\n" + text + "\n"
    )
    path = ROOT / "docs" / "benchmarks.md"
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    before, _, after = existing.partition("## Service\n")
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    path.write_text(before.rstrip() + "\n\n" + section + ("\n## " + rest if rest else ""))


if __name__ == "__main__":
    main()
