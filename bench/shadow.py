"""Saturation with and without a shadow candidate, in one run (`make bench-shadow`).

One `imgclf serve` (embedded mode, the repository's models, cache off, batch 16) is loaded by
wrk in a closed loop at saturation; between runs the admin routes switch the shadow of
efficientnet-lite0 (FP32, live) to efficientnet-lite0-int8@1 at 0%, 10% and 100% of uploads,
in interleaved rounds, so that the drift of a shared machine falls on every setting alike.
Per setting: the median run's req/s, p50, p99 and failures, and the copies compared and
dropped (from /metrics). Prints a markdown table and writes it into docs/benchmarks.md
("## Shadow comparisons").
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.request
from collections import defaultdict
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import photo_640x480
from service import cpu_model
from wrkload import Upload, WrkResult, ensure_wrk, run_wrk

from imgclf.launcher import LocalStack
from imgclf.models_admin import set_shadow, stop_shadow

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = Path(os.environ.get("IMGCLF_MODEL_REPOSITORY", ROOT / "data" / "models"))
LIVE, CANDIDATE = "efficientnet-lite0", "efficientnet-lite0-int8@1"
FRACTIONS = (0.0, 0.1, 1.0)
METRICS_TOKEN = "bench-metrics-token"  # noqa: S105 - a throwaway service on loopback
# The light open loop: connections enough that none waits at its rate.
LIGHT_CONNECTIONS = 4
# (load, shadow fraction): each run's wrk figures and shadow copies.
Runs = dict[tuple[str, float], list[tuple[WrkResult, dict[str, float]]]]


def _load_name(clients: int, rate: float, args: argparse.Namespace) -> str:
    if rate:
        return f"light: open loop, {rate:g}/s"
    if clients == args.clients:
        return f"saturation: {clients} connections"
    return f"{clients} connections, tight loop"


def shadow_counts(url: str) -> dict[str, float]:
    """Copies compared, and dropped by reason, so far."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    counts: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("imgclf_shadow_comparisons_total{"):
            counts["compared"] += float(line.rsplit(" ", 1)[1])
        elif match := re.match(r'imgclf_shadow_dropped_total\{.*reason="(\w+)".*\} (\S+)', line):
            counts[match.group(1)] += float(match.group(2))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--clients", type=int, default=32, help="wrk connections, closed loop")
    parser.add_argument(
        "--few-clients", type=int, default=2, help="connections of a tight loop of few (0: none)"
    )
    parser.add_argument(
        "--light-rate", type=float, default=10.0, help="requests/s of an open loop (0: none)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    ensure_wrk()
    image = photo_640x480()
    runs: Runs = defaultdict(list)
    # (connections, rate): saturation, a few callers in a tight loop, a light open loop.
    loads = [(args.clients, 0.0)]
    if args.few_clients:
        loads.append((args.few_clients, 0.0))
    if args.light_rate:
        loads.append((LIGHT_CONNECTIONS, args.light_rate))
    settings = {
        "model_repository": REPOSITORY,
        "default_model": LIVE,
        "cache": False,
        "max_batch_size": 16,
        "metrics_token": METRICS_TOKEN,
    }
    with LocalStack(**settings) as stack:
        token = stack.login()
        upload = Upload.jpeg(image, token)
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}", flush=True)
            for fraction in FRACTIONS:
                if fraction:
                    set_shadow(stack.url, token, LIVE, CANDIDATE, fraction)
                else:
                    stop_shadow(stack.url, token, LIVE)
                for clients, rate in loads:
                    before = shadow_counts(stack.url)
                    result = run_wrk(
                        f"{stack.url}/model/predict",
                        upload,
                        connections=clients,
                        seconds=args.seconds,
                        rate=rate,
                    )
                    after = shadow_counts(stack.url)
                    copies = {k: after[k] - before.get(k, 0.0) for k in after}
                    runs[_load_name(clients, rate, args), fraction].append((result, copies))
                    print(
                        f"  {_load_name(clients, rate, args)}, shadow {fraction:.0%}: "
                        f"{result.throughput:.1f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
                        f"{result.p99_ms:.1f} ms, {result.failures} failed; copies "
                        f"{dict(copies)}",
                        flush=True,
                    )
    table = report(runs, args)
    print(table)
    if not args.no_write:
        write_section(table)


def report(runs: Runs, args: argparse.Namespace) -> str:
    lines = [
        "## Shadow comparisons",
        "",
        f"`make bench-shadow` (bench/shadow.py), {date.today():%Y-%m-%d}, {cpu_model()}, "
        f"{os.cpu_count()} cores **shared with other work running at the same time** (figures "
        "from a quiet machine will differ). One `imgclf serve` (embedded, cache off, batch 16, "
        f"{LIVE}@1 FP32 live), loaded by wrk: a closed loop of {args.clients} connections "
        f"(saturation), one of {args.few_clients} (few callers, no pause: the cores stay busy), "
        f"and an open loop at {args.light_rate:g} requests/s (a light load); "
        f"{args.seconds:g} s per run, {args.rounds} interleaved rounds; the shadow of {LIVE} "
        f"switched between runs to {CANDIDATE} through the admin route. Median run per setting "
        "(by req/s; in the open loop by p99); failures and copies summed over its runs (copies "
        "counted from before wrk's 2 s warm-up to the end of the run).",
        "",
        "| load | shadow | req/s | p50 ms | p99 ms | failed | each run: req/s (open loop: p50/p99) "
        "| copies compared | copies dropped (why) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for (load, fraction), measured in runs.items():
        open_loop = load.startswith("light")
        # An open loop's req/s is the rate asked for: its runs are told apart by their tail.
        median = sorted(
            measured, key=lambda run: run[0].p99_ms if open_loop else run[0].throughput
        )[len(measured) // 2][0]
        failed = sum(run.failures for run, _ in measured)
        totals: dict[str, float] = defaultdict(float)
        for _, copies in measured:
            for key, value in copies.items():
                totals[key] += value
        compared = int(totals.pop("compared", 0))
        dropped = ", ".join(f"{int(v)} {k}" for k, v in sorted(totals.items()) if v) or "none"
        name = f"{fraction:.0%} to INT8" if fraction else "none"
        each = ", ".join(
            f"{run.p50_ms:.0f}/{run.p99_ms:.0f} ms" if open_loop else f"{run.throughput:.0f}"
            for run, _ in measured
        )
        lines.append(
            f"| {load} | {name} | {median.throughput:.1f} "
            f"| {median.p50_ms:.1f} | {median.p99_ms:.1f} "
            f"| {failed} | {each} | {compared if fraction else '-'} "
            f"| {dropped if fraction else '-'} |"
        )
    lines += [
        "",
        'A copy is made only while the workers have room (docs/quality.md, "Shadow '
        'comparisons"): `load`, `busy`, `backlog` and `in_flight` count the copies dropped for '
        "want of it. "
        "The req/s of each run show how far this shared machine drifts between runs of the "
        "same setting; read a difference between settings against that spread. In the open "
        "loop req/s is the rate asked for; its p50 and p99 are what a copy costs the callers "
        "when copies are made.",
    ]
    return "\n".join(lines) + "\n"


def write_section(table: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    start = text.find("## Shadow comparisons")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + table
    else:
        following = text.find("\n## ", start + 1)
        text = text[:start] + table + (text[following + 1 :] if following != -1 else "")
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
