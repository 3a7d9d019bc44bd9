"""Soak: the Redis mode (API + 2 worker processes) at 70% of its peak for ten minutes, with the
memory of every process recorded every 10 s (`make soak`; not part of CI).

Memory must stay flat: after the warm-up, each process's RSS may grow by less than 5%. The run
writes the curve to docs/img/soak-memory.png and its figures into docs/reliability.md, between
the ``<!-- soak:start -->`` and ``<!-- soak:end -->`` markers.

    python bench/soak.py                 # find the peak, then 10 minutes at 70% of it
    python bench/soak.py --minutes 1     # a quick check that it all works
    python bench/soak.py --rate 20       # skip the peak search
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, closed_loop, multipart_request, open_loop

from imgclf.launcher import LocalStack

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "tests" / "data" / "dog.jpeg"
MODEL_DIR = Path(os.environ.get("IMGCLF_MODEL_DIR", ROOT / "data/models/efficientnet-lite0/1"))
DOC = ROOT / "docs" / "reliability.md"
PLOT = ROOT / "docs" / "img" / "soak-memory.png"
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
GROWTH_LIMIT = 0.05


@dataclass
class Service:
    url: str
    token: str
    api: psutil.Process
    workers: psutil.Process  # the supervisor; the worker processes are its children
    redis: psutil.Process

    def sample(self) -> dict[str, float]:
        """RSS in MB of the API, each worker process (by slot) and Redis."""
        mb = 2**20
        figures = {
            "API": self.api.memory_info().rss / mb,
            "Redis": self.redis.memory_info().rss / mb,
        }
        children = sorted(self.workers.children(), key=lambda child: child.create_time())
        for slot, child in enumerate(children[:2], start=1):
            try:
                figures[f"worker {slot}"] = child.memory_info().rss / mb
            except psutil.NoSuchProcess:  # recycled between listing and reading
                continue
        return figures

    def worker_pids(self) -> list[int]:
        return sorted(child.pid for child in self.workers.children())


@dataclass
class Samples:
    minutes: list[float] = field(default_factory=list)
    rss: list[dict[str, float]] = field(default_factory=list)
    worker_pids: list[list[int]] = field(default_factory=list)


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.open(DOG).convert("RGB").resize((640, 480), Image.Resampling.LANCZOS).save(
        buffer, format="JPEG", quality=90
    )
    return buffer.getvalue()


@contextmanager
def running_service() -> Iterator[Service]:
    """redis-server, `imgclf serve` in Redis mode and `imgclf worker --processes 2`."""
    with LocalStack(workers=2, model_dir=MODEL_DIR, cache=False) as stack:
        yield Service(
            url=f"{stack.url}/model/predict",
            token=stack.login(),
            api=psutil.Process(stack.pids["api"]),
            workers=psutil.Process(stack.pids["worker"]),
            redis=psutil.Process(stack.pids["redis"]),
        )


def find_peak(service: Service, image: bytes, seconds: float) -> LoadResult:
    request = multipart_request(service.url, service.token, "photo.jpg", image)
    return asyncio.run(closed_loop(service.url, request, 32, seconds))


async def soak(
    service: Service, image: bytes, rate: float, minutes: float, every_s: float
) -> tuple[LoadResult, Samples]:
    request = multipart_request(service.url, service.token, "photo.jpg", image)
    samples = Samples()
    started = time.monotonic()

    async def record() -> None:
        while True:
            samples.minutes.append((time.monotonic() - started) / 60)
            samples.rss.append(service.sample())
            samples.worker_pids.append(service.worker_pids())
            await asyncio.sleep(every_s)

    sampler = asyncio.create_task(record())
    try:
        result = await open_loop(
            service.url, request, rate, minutes * 60, warmup_s=0, connections=64
        )
    finally:
        sampler.cancel()
    samples.minutes.append((time.monotonic() - started) / 60)
    samples.rss.append(service.sample())
    samples.worker_pids.append(service.worker_pids())
    return result, samples


def growth(samples: Samples, name: str, warmup_min: float) -> tuple[float, float, float]:
    """(MB at the end of the warm-up, MB at the end, growth): medians of three samples each."""
    values = [
        (m, rss[name]) for m, rss in zip(samples.minutes, samples.rss, strict=True) if name in rss
    ]
    settled = [value for minute, value in values if minute >= warmup_min]
    if len(settled) < 2:
        return float("nan"), float("nan"), float("nan")
    first = statistics.median(settled[:3])
    last = statistics.median(settled[-3:])
    return first, last, (last - first) / first


def plot(samples: Samples, warmup_min: float, names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.2), dpi=110)
    for name in names:
        points = [
            (m, rss[name])
            for m, rss in zip(samples.minutes, samples.rss, strict=True)
            if name in rss
        ]
        axis.plot([m for m, _ in points], [v for _, v in points], marker=".", label=name)
    axis.axvline(warmup_min, color="grey", linestyle="--", linewidth=1, label="end of warm-up")
    axis.set_xlabel("minutes")
    axis.set_ylabel("RSS (MB)")
    axis.set_ylim(bottom=0)
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT)
    plt.close(figure)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_section(text: str) -> None:
    existing = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{START}\n{END}\n"
    if START not in existing or END not in existing:
        existing = existing.rstrip() + f"\n\n{START}\n{END}\n"
    before, _, rest = existing.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(f"{before}{START}\n{text.strip()}\n{END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--rate", type=float, help="requests/s (default: 70%% of a measured peak)")
    parser.add_argument("--peak-seconds", type=float, default=10.0, help="length of the peak run")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        help="excluded from the growth (default: 2, or 30%% of a short run)",
    )
    parser.add_argument("--no-write", action="store_true", help="leave docs/ untouched")
    args = parser.parse_args()
    warmup = (
        args.warmup_minutes if args.warmup_minutes is not None else min(2.0, 0.3 * args.minutes)
    )
    image = photo()

    with running_service() as service:
        peak_note = ""
        rate = args.rate
        if rate is None:
            peak = find_peak(service, image, args.peak_seconds)
            rate = 0.7 * peak.throughput
            peak_note = f"peak {peak.throughput:.1f} req/s (32 clients, closed loop), so "
            print(f"peak: {peak.throughput:.1f} req/s; soaking at {rate:.1f} req/s", flush=True)
        result, samples = asyncio.run(soak(service, image, rate, args.minutes, args.every))

    names = ["API", "worker 1", "worker 2", "Redis"]
    rows, worst = [], 0.0
    for name in names:
        first, last, change = growth(samples, name, warmup)
        worst = max(worst, change) if change == change else worst
        rows.append(f"| {name} | {first:.0f} | {last:.0f} | {change * 100:+.1f}% |")
    restarts = len({pid for pids in samples.worker_pids for pid in pids}) - 2
    verdict = "flat" if worst < GROWTH_LIMIT else "GROWING"
    title = f"imgclf soak: Redis mode, 2 workers, {rate:.1f} req/s for {args.minutes:g} min"
    statuses = dict(sorted(result.statuses.items()))
    text = "\n".join(
        [
            f"Measured {date.today().isoformat()} by `bench/soak.py --minutes {args.minutes:g}` "
            f"on {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}: "
            f"Redis mode (`imgclf serve` + `imgclf worker --processes 2` + redis-server, "
            f"cache off), {peak_note}an open loop at **{rate:.1f} req/s** for "
            f"{args.minutes:g} min, RSS sampled every {args.every:g} s; the first "
            f"{warmup:g} min are warm-up.",
            "",
            "![RSS of each process during the soak](img/soak-memory.png)",
            "",
            "| process | MB after warm-up | MB at the end | growth |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            f"- verdict: **{verdict}** (largest growth {worst * 100:+.1f}%, limit "
            f"{GROWTH_LIMIT * 100:.0f}%)",
            f"- answers: {statuses}; {result.throughput:.1f} req/s served, p50 "
            f"{result.percentile(50):.0f} ms, p99 {result.percentile(99):.0f} ms",
            f"- worker processes replaced during the run: {max(restarts, 0)}",
        ]
    )
    print("\n" + text)
    if not args.no_write:
        plot(samples, warmup, names, title)
        write_section(text)
        print(f"\nwrote {PLOT.relative_to(ROOT)} and the soak section of {DOC.relative_to(ROOT)}")
    long_enough = args.minutes >= 5
    return 1 if long_enough and worst >= GROWTH_LIMIT else 0


if __name__ == "__main__":
    sys.exit(main())
