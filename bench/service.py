"""The service against the raw pipeline and the machine's limit, side by side (`make bench`).

Raw pipeline: decode + classify one 640x480 JPEG at a time in a tight loop, in one process.
The machine's limit: one single-threaded such loop per core, in parallel processes, summed.
Then the HTTP service, started for real (`imgclf serve`, and `imgclf worker` + redis-server for
the Redis mode), loaded by wrk (bench/wrk/upload.lua) on the same machine: 32 connections in a
closed loop, one connection for a lone request, and an open loop at 70% of the peak. Prints a
markdown table and writes it into docs/benchmarks.md ("## Service").
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import LoadResult, closed_loop, multipart_request
from pipeline import MODEL_DIR, cores, machine_limit, photo_640x480, raw_pipeline
from stages import ORDER, RAW, lone_stages, raw_call
from wrkload import Upload, WrkResult, ensure_wrk, run_wrk

from imgclf.launcher import LocalStack
from imgclf.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Open loop: enough connections that one is free for every request due while others wait for
# answers (rate x the slowest latency); wrk counts a request sent after its slot as late.
OPEN_LOOP_CONNECTIONS = 64


@contextmanager
def running_service(
    *, batch: int, redis: bool = False, workers: int = 1, max_pending: int = 256
) -> Iterator[tuple[str, str]]:
    """Start the service for real; yield (predict URL, token)."""
    settings = {
        "model_dir": MODEL_DIR,
        "cache": False,
        "max_batch_size": batch,
        "server_timing": True,  # for bench/stages.py
    }
    with LocalStack(workers=workers if redis else 0, max_pending=max_pending, **settings) as stack:
        yield f"{stack.url}/model/predict", stack.login()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# The service's own max batch size, and the others it is compared with.
BATCH = Settings.model_fields["max_batch_size"].default
EMBEDDED, REDIS = f"embedded, batch {BATCH}", f"redis, 1 worker, batch {BATCH}"
# Each name once (through a dict), should the default be 16 or 1 itself.
CONFIGURATIONS: list[tuple[str, dict[str, object]]] = list(
    dict(
        [
            (EMBEDDED, {"batch": BATCH}),
            ("embedded, batch 16", {"batch": 16}),
            ("embedded, batch 1", {"batch": 1}),
            (REDIS, {"batch": BATCH, "redis": True}),
            ("redis, 1 worker, batch 1", {"batch": 1, "redis": True}),
            (f"redis, 2 workers, batch {BATCH}", {"batch": BATCH, "redis": True, "workers": 2}),
        ]
    ).items()
)


@dataclass
class Figures:
    """Every round's measurement of one configuration, and its ratios to that round's yardsticks."""

    runs: list[WrkResult] = field(default_factory=list)
    vs_raw: list[float] = field(default_factory=list)
    vs_limit: list[float] = field(default_factory=list)

    def add(self, result: WrkResult, raw_rate: float, limit_rate: float) -> None:
        self.runs.append(result)
        self.vs_raw.append(result.throughput / raw_rate)
        self.vs_limit.append(result.throughput / limit_rate)

    @property
    def median_run(self) -> WrkResult:
        return sorted(self.runs, key=lambda run: run.throughput)[len(self.runs) // 2]

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)


@dataclass
class Yardsticks:
    """The raw loop and the machine's limit, measured before every configuration."""

    raw_rates: list[float] = field(default_factory=list)
    raw_times: list[float] = field(default_factory=list)
    limit_rates: list[float] = field(default_factory=list)

    def measure(self, image: bytes, seconds: float) -> tuple[float, float, float]:
        raw_rate, raw_ms = raw_pipeline(image, seconds)
        limit_rate = machine_limit(image, seconds)
        self.raw_rates.append(raw_rate)
        self.raw_times.append(raw_ms)
        self.limit_rates.append(limit_rate)
        return raw_rate, raw_ms, limit_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--clients", type=int, default=32, help="wrk connections, closed loop")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    ensure_wrk()
    image = photo_640x480()
    raw = raw_call(image)  # paired with each lone upload (bench/stages.py)
    yardsticks = Yardsticks()
    figures: dict[str, Figures] = defaultdict(Figures)
    lone_overheads: list[float] = []
    lone_breakdowns: list[dict[str, float]] = []

    # Every configuration once per round, each compared with a raw loop and the limit measured
    # just before it: on a shared machine the speed of the cores drifts by tens of percent
    # within minutes.
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}", flush=True)
        for name, options in CONFIGURATIONS:
            raw_rate, _, limit_rate = yardsticks.measure(image, args.seconds / 2)
            with running_service(**options) as (url, token):  # type: ignore[arg-type]
                upload = Upload.jpeg(image, token)
                result = run_wrk(url, upload, connections=args.clients, seconds=args.seconds)
                figures[name].add(result, raw_rate, limit_rate)
                if name == EMBEDDED:
                    lone = run_wrk(url, upload, connections=1, seconds=args.seconds / 2)
                    figures["lone request"].add(lone, raw_rate, limit_rate)
                    stages = lone_stages(url, upload, raw)
                    lone_overheads.append(stages["over raw"])
                    lone_breakdowns.append(stages)
                    rate = 0.7 * result.throughput
                    open_result = run_wrk(
                        url,
                        upload,
                        connections=OPEN_LOOP_CONNECTIONS,
                        seconds=args.seconds,
                        rate=rate,
                    )
                    figures["open loop 70%"].add(open_result, raw_rate, limit_rate)
                    print(
                        f"  lone request: p50 {lone.p50_ms:.1f} ms (wrk), "
                        f"{stages['over raw']:+.1f} ms over a raw call beside it; "
                        f"open loop at {rate:.0f}/s: "
                        f"{open_result.throughput:.1f}/s, p99 {open_result.p99_ms:.1f} ms, "
                        f"{open_result.late} late",
                        flush=True,
                    )
            print(
                f"  {name}: {result.throughput:.1f} req/s, {result.throughput / raw_rate:.2f} of "
                f"the raw loop ({raw_rate:.1f}/s), {result.throughput / limit_rate:.2f} of the "
                f"limit ({limit_rate:.1f}/s); p50 {result.p50_ms:.1f} ms, p99 "
                f"{result.p99_ms:.1f} ms; {result.failures} failed; wrk CPU "
                f"{result.client_cpu_share:.1%} of a core",
                flush=True,
            )

    with running_service(batch=BATCH, max_pending=8) as (url, token):
        overload = load(url, token, image, 64, args.seconds / 2)
    report(yardsticks, figures, lone_overheads, lone_breakdowns, overload, args)


def load(url: str, token: str, image: bytes, clients: int, seconds: float) -> LoadResult:
    """The asyncio client, for the over-capacity run: it times the 503s apart from the 200s."""
    request = multipart_request(url, token, "photo.jpg", image)
    return asyncio.run(closed_loop(url, request, clients, seconds))


def report(
    yardsticks: Yardsticks,
    figures: dict[str, Figures],
    lone_overheads: list[float],
    lone_breakdowns: list[dict[str, float]],
    overload: LoadResult,
    args: argparse.Namespace,
) -> None:
    raw_rate = statistics.median(yardsticks.raw_rates)
    raw_ms = statistics.median(yardsticks.raw_times)
    limit_rate = statistics.median(yardsticks.limit_rates)
    raw_vs_limit = statistics.median(
        raw / limit for raw, limit in zip(yardsticks.raw_rates, yardsticks.limit_rates, strict=True)
    )
    table = [
        "| configuration | req/s | p50 ms | p99 ms | p99/p50 | vs raw | vs limit | wrk CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| raw decode+classify loop, 1 process | {raw_rate:.1f} | {raw_ms:.1f} |  |  | 1.00 "
        f"| {raw_vs_limit:.2f} |  |",
        f"| machine's limit: {cores()} one-thread loops in parallel processes | {limit_rate:.1f} "
        f"|  |  |  | {1 / raw_vs_limit:.2f} | 1.00 |  |",
    ]
    rows = [(f"HTTP {name}, {args.clients} connections", name) for name, _ in CONFIGURATIONS]
    rows.append(("HTTP embedded, 1 connection (lone request)", "lone request"))
    rows.append(
        (
            f"HTTP embedded, open loop at 70% of the batch-{BATCH} peak ({OPEN_LOOP_CONNECTIONS} "
            "connections)",
            "open loop 70%",
        )
    )
    for label, name in rows:
        figure = figures[name]
        table.append(
            f"| {label} | {figure.median_run.throughput:.1f} | {figure.median('p50_ms'):.1f} "
            f"| {figure.median('p99_ms'):.1f} | {figure.median('tail_ratio'):.1f} "
            f"| {statistics.median(figure.vs_raw):.2f} "
            f"| {statistics.median(figure.vs_limit):.2f} "
            f"| {figure.median('client_cpu_share'):.1%} |"
        )
    embedded, redis_one = figures[EMBEDDED], figures[REDIS]
    open_figure = figures["open loop 70%"]
    redis_vs_embedded = statistics.median(
        redis / local for redis, local in zip(redis_one.vs_raw, embedded.vs_raw, strict=True)
    )
    batching = {
        mode: statistics.median(
            big / small
            for big, small in zip(
                figures[f"{mode}, batch {BATCH}"].vs_raw, figures[one].vs_raw, strict=True
            )
        )
        for mode, one in [
            ("embedded", "embedded, batch 1"),
            ("redis, 1 worker", "redis, 1 worker, batch 1"),
        ]
    }
    every_run = [run for figure in figures.values() for run in figure.runs]
    client_shares = [run.client_cpu_share for run in every_run]
    failures = sum(run.failures for run in every_run)
    late = sum(run.late for run in open_figure.runs)
    summary = [
        f"- embedded HTTP service / the machine's limit at {args.clients} connections: "
        f"**{statistics.median(embedded.vs_limit):.2f}** (target ≥ 0.85; per round "
        f"{_listed(embedded.vs_limit)}); Redis mode, 1 worker: "
        f"**{statistics.median(redis_one.vs_limit):.2f}** (per round "
        f"{_listed(redis_one.vs_limit)}); the raw loop reaches {raw_vs_limit:.2f} of it",
        f"- p99/p50 at {args.clients} connections: embedded **"
        f"{statistics.median(run.tail_ratio for run in embedded.runs):.2f}**, Redis mode "
        f"**{statistics.median(run.tail_ratio for run in redis_one.runs):.2f}** (target ≤ 1.5; "
        f"per round {_listed([run.tail_ratio for run in embedded.runs])} and "
        f"{_listed([run.tail_ratio for run in redis_one.runs])})",
        f"- embedded HTTP service / raw pipeline: **{statistics.median(embedded.vs_raw):.2f}** "
        f"(per round {_listed(embedded.vs_raw)}); Redis mode, 1 worker / embedded: "
        f"**{redis_vs_embedded:.2f}** (median of the rounds' ratios)",
        f"- a lone request over one raw decode+classify made right after it (the median of "
        f"200 pairs per round, the client's own time included): "
        f"**{statistics.median(lone_overheads):+.1f} ms** (target ≤ 3 ms; per round "
        f"{', '.join(f'{value:+.1f}' for value in lone_overheads)})",
        f"- open loop at 70% of peak: p99 **{open_figure.median('p99_ms'):.1f} ms** "
        f"(target < 150 ms); {late} requests sent after their slot",
        f"- what max batch {BATCH} serves over max batch 1: embedded "
        f"**{batching['embedded']:.2f}x**, "
        f"Redis with 1 worker **{batching['redis, 1 worker']:.2f}x**",
        f"- over capacity (64 clients, at most 8 pending; bench/loadgen.py): answers "
        f"{dict(sorted(overload.statuses.items()))}; the 503s came back in p50 "
        f"**{overload.percentile(50, 503):.1f} ms**, p99 **{overload.percentile(99, 503):.1f} ms** "
        "(target < 50 ms)",
        f"- the client: wrk used {statistics.median(client_shares):.1%} of one core in the median"
        f" run, {max(client_shares):.1%} at most; {failures} requests failed in the wrk runs",
    ]
    text = "\n".join([*table, "", *summary, "", *stage_table(lone_breakdowns)])
    print("\n" + text)
    if args.no_write:
        return
    section = (
        "## Service\n\n"
        f"Measured {date.today().isoformat()} on {cpu_model()}, {cores()} cores, "
        f"Python {platform.python_version()}, by `make bench` (`bench/service.py --seconds "
        f"{args.seconds:g} --rounds {args.rounds}`): every configuration runs for "
        f"{args.seconds:g} s after a 2 s warm-up, right after {args.seconds / 2:g} s of the raw "
        f"loop and {args.seconds / 2:g} s of the machine's limit ({cores()} one-thread "
        "decode+classify loops, one process each, started together, images/s summed); each "
        "ratio is taken against those runs, and the table holds medians over the rounds. Cache "
        "off, one 640x480 JPEG. The client is wrk (one thread, bench/wrk/upload.lua) on the same "
        "cores; its column is its own CPU time over the run's wall time. In the closed loops "
        "the measured run's connections start spread over the warm-up's median latency, as a "
        "steady stream has them, rather than in one burst. The open loop paces "
        "wrk's requests on one schedule (wrk2 is not packaged); a request sent after its slot "
        "would be counted as late.\n\n" + text + "\n"
    )
    path = ROOT / "docs" / "benchmarks.md"
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    before, _, after = existing.partition("## Service\n")
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    path.write_text(before.rstrip() + "\n\n" + section + ("\n## " + rest if rest else ""))


def stage_table(breakdowns: list[dict[str, float]]) -> list[str]:
    """A lone request stage by stage (bench/stages.py), one column per round."""
    names = {
        "read": "read: from arrival to the route (the token checked)",
        "check": "check: the body read, its form parsed, the picture checked and named",
        "queue": "queue: until a lane takes the job",
        "decode": "decode, and the hand-offs to the lane and back",
        "inference": "inference",
        "record": "record: the upload stored, the row written",
        "app": "the app, all of the above",
        "outside": "outside the app: HTTP server, loopback, client",
        "client": "the client's time",
        "client cpu": "of which the client's own CPU time",
        "raw decode": "raw: one decode, right after the request",
        "raw inference": "raw: one inference of it",
        "raw": "raw: decode + inference",
        "over raw": "the client's time over the raw call's (median of the pairs)",
    }
    rounds = " | ".join(f"round {number}" for number in range(1, len(breakdowns) + 1))
    lines = [
        "A lone request, stage by stage: medians over 200 uploads sent one at a time on one "
        "keep-alive connection (a bare socket client, bench/stages.py), from each answer's "
        "`Server-Timing` header, each followed by one raw decode + classify of the same picture "
        "in the benchmark's process (the service idle meanwhile), ms:",
        "",
        f"| stage | {rounds} |",
        "|---|" + "---:|" * len(breakdowns),
    ]
    for name in [*ORDER, *RAW]:
        values = " | ".join(f"{breakdown.get(name, 0.0):.2f}" for breakdown in breakdowns)
        lines.append(f"| {names[name]} | {values} |")
    return lines


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    main()
