"""The Locust stress matrix (`make stress`, `make stress-quick`): for each configuration start
the real service, run Locust headless for each number of users, and write the results
(stress_test/results/) and the report (docs/stress-test-report.md, docs/img/stress-*.png).

Each run: ``locust --headless -u U -r R --csv PREFIX --only-summary``. The warm-up (spawning,
every user's sign-up and log-in, then ``--warmup-s`` more) is measured by Locust but reset
before the measured window (see the locustfile), because Argon2 log-ins of 100 users take
seconds of CPU that a fixed-length warm-up might not cover. During the window the runner
samples the CPU of every process (API, each worker, redis-server, Locust) and diffs the
service's /metrics (batch sizes formed, model time, cache hits).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.service import MODEL_DIR  # noqa: E402 - run as a script, the root is not on the path
from imgclf.launcher import Child  # noqa: E402
from stress_test.measure import CpuSampler, metrics_delta, parse_metrics  # noqa: E402
from stress_test.photos import load_photos  # noqa: E402
from stress_test.stack import BIN, Stack, StackConfig  # noqa: E402

LOCUSTFILE = ROOT / "stress_test" / "locustfile.py"
RESULTS = ROOT / "stress_test" / "results"
EMBEDDED = StackConfig("embedded")


@dataclass(frozen=True)
class RunOptions:
    warmup_s: float = 5.0
    measure_s: float = 40.0
    think_time_s: float = 1.0
    unique_share: float = 0.5
    login: str = "signup"
    postgres: bool = False


@dataclass(frozen=True)
class Preset:
    users: tuple[int, ...]
    configs: tuple[StackConfig, ...]
    options: RunOptions


def _redis(workers: int, batch: int = 16) -> StackConfig:
    return StackConfig("redis", workers=workers, max_batch_size=batch)


PRESETS = {
    "full": Preset(
        users=(1, 10, 50, 100),
        configs=(
            EMBEDDED,
            StackConfig("embedded", max_batch_size=1),
            _redis(1),
            _redis(1, batch=1),
            _redis(2),
            _redis(2, batch=1),
            _redis(4),
            _redis(4, batch=1),
        ),
        options=RunOptions(warmup_s=5, measure_s=40),
    ),
    "quick": Preset(
        users=(1, 10, 50),
        configs=(EMBEDDED, _redis(1), _redis(2)),
        options=RunOptions(warmup_s=2, measure_s=15),
    ),
}


def _number(text: str) -> float | None:
    return None if text == "N/A" else float(text)  # Locust writes N/A for a name with no request


def read_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """Locust's ``PREFIX_stats.csv`` as {name: {count, failures, rps, avg/p50/p95/p99 ms}};
    names without a request in the window are left out."""
    rows: dict[str, dict[str, Any]] = {}
    with Path(f"{prefix}_stats.csv").open() as handle:
        for row in csv.DictReader(handle):
            if int(row["Request Count"]) == 0 and row["Name"] != "Aggregated":
                continue
            rows[row["Name"]] = {
                "count": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                "avg_ms": _number(row["Average Response Time"]),
                "p50_ms": _number(row["50%"]),
                "p95_ms": _number(row["95%"]),
                "p99_ms": _number(row["99%"]),
            }
    return rows


def read_failures(prefix: Path) -> list[dict[str, Any]]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open() as handle:
        return [
            {"name": row["Name"], "error": row["Error"], "occurrences": int(row["Occurrences"])}
            for row in csv.DictReader(handle)
        ]


def spawn_rate(users: int) -> int:
    return min(users, 25)


def run_level(stack: Stack, users: int, options: RunOptions, run_dir: Path) -> dict[str, Any]:
    """One Locust run against a started stack; its figures from the measured window only."""
    prefix = run_dir / f"u{users}"
    warmup_file = Path(f"{prefix}_warmup.json")
    # A safety cap: log-ins of U users, the warm-up and the window, with room to spare.
    cap_s = int(options.warmup_s + options.measure_s + 60 + users)
    command = [
        str(BIN / "locust"),
        "-f", str(LOCUSTFILE),
        "--headless",
        "-u", str(users),
        "-r", str(spawn_rate(users)),
        "-t", f"{cap_s}s",
        "--csv", str(prefix),
        "--only-summary",
        "--host", stack.url,
        "--exit-code-on-error", "0",
        "--warmup-s", str(options.warmup_s),
        "--measure-s", str(options.measure_s),
        "--think-time", str(options.think_time_s),
        "--unique-share", str(options.unique_share),
        "--login", options.login,
    ]  # fmt: skip
    load_before = os.getloadavg()
    started = time.monotonic()
    locust_log = run_dir / f"u{users}_locust.log"
    locust_log.unlink(missing_ok=True)
    locust = Child("locust", command, dict(os.environ), locust_log, cwd=ROOT).start()
    sampler = CpuSampler({**stack.pids, "locust": locust.pid, "runner": os.getpid()})
    sampler.start()
    try:
        while not warmup_file.exists():
            if locust.exit_code() is not None or time.monotonic() - started > cap_s:
                raise RuntimeError(
                    f"{users} users: the warm-up never ended (log-ins failing?); see {locust_log}"
                )
            time.sleep(0.1)
        before = parse_metrics(stack.metrics_text())
        sampler.start_window()
        warmup = json.loads(warmup_file.read_text())
        if warmup["users"] < users:
            raise RuntimeError(
                f"only {warmup['users']} of {users} users logged in: {warmup['errors']}"
                + (
                    " (--login admin measures without sign-ups)"
                    if options.login == "signup"
                    else ""
                )
            )
        time.sleep(max(0.0, warmup["ended_at"] + options.measure_s - time.time()))
        after = parse_metrics(stack.metrics_text())
        cpu = sampler.end_window()
        assert locust.process is not None
        locust.process.wait(60)
    finally:
        sampler.join(5)
        locust.stop()
    stats = read_stats(prefix)
    aggregated = stats.pop("Aggregated")
    login_names = ("/user/ (sign up)", "/login")
    return {
        "users": users,
        "spawn_rate": spawn_rate(users),
        "measure_s": options.measure_s,
        "wall_s": round(time.monotonic() - started, 1),
        "requests": aggregated["count"],
        "failures": aggregated["failures"],
        "rps": aggregated["rps"],
        "avg_ms": aggregated["avg_ms"],
        "p50_ms": aggregated["p50_ms"],
        "p95_ms": aggregated["p95_ms"],
        "p99_ms": aggregated["p99_ms"],
        "predict": stats.get("/model/predict"),
        "endpoints": stats,
        "logins_in_window": sum(stats[name]["count"] for name in login_names if name in stats),
        "failure_messages": read_failures(prefix),
        "warmup": warmup,
        "service": metrics_delta(before, after),
        "cpu": cpu,
        "loadavg_before": [round(value, 2) for value in load_before],
        "stats_csv": str(Path(f"{prefix}_stats.csv")),
    }


def run_configuration(
    config: StackConfig,
    users: tuple[int, ...],
    options: RunOptions,
    out_dir: Path,
    model_dir: Path = MODEL_DIR,
    redis_url: str | None = None,
) -> list[dict[str, Any]]:
    run_dir = out_dir / "runs" / config.slug
    run_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    began = time.monotonic()
    with Stack(
        config, model_dir, out_dir / "logs" / config.slug, redis_url=redis_url,
        postgres=options.postgres,
    ) as stack:  # fmt: skip
        print(f"{config.name}: ready in {time.monotonic() - began:.0f} s", flush=True)
        for count in users:
            run = {"config": config.slug, "name": config.name, **asdict(config)}
            run.update(run_level(stack, count, options, run_dir))
            runs.append(run)
            predict = run["predict"] or {}
            print(
                f"  {count:>3} users: {run['rps']:.1f} req/s, predict {predict.get('rps', 0):.1f}"
                f"/s p50 {predict.get('p50_ms', 0):.0f} p95 {predict.get('p95_ms', 0):.0f} ms, "
                f"{run['failures']} failures, mean batch "
                f"{run['service']['mean_batch_size'] or 0:.1f}, CPU {run['cpu']['processes']}",
                flush=True,
            )
    return runs


def run_matrix(
    configs: tuple[StackConfig, ...],
    users: tuple[int, ...],
    options: RunOptions,
    out_dir: Path,
    model_dir: Path = MODEL_DIR,
    redis_url: str | None = None,
    runs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every configuration in turn; results are appended to ``runs`` as each one finishes, so
    that a caller keeps what was measured when a later one fails."""
    load_photos()  # made once, before any clock runs
    runs = [] if runs is None else runs
    for config in configs:
        runs += run_configuration(config, users, options, out_dir, model_dir, redis_url)
    return runs


def save_results(results: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=1))
    fields = ["config", "users", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"]
    with (out_dir / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [*fields, "predict_rps", "predict_p50_ms", "predict_p95_ms", "predict_p99_ms",
             "mean_batch_size", "cpu_machine_pct", "cpu_locust_pct"]
        )  # fmt: skip
        for run in results["runs"]:
            predict = run["predict"] or {}
            writer.writerow(
                [run[name] for name in fields]
                + [predict.get(k) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")]
                + [run["service"]["mean_batch_size"], run["cpu"]["machine"],
                   run["cpu"]["processes"].get("locust")]
            )  # fmt: skip
    (RESULTS / "latest").unlink(missing_ok=True)
    (RESULTS / "latest").symlink_to(out_dir.resolve(), target_is_directory=True)
    return path


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the short preset (< 5 minutes)")
    parser.add_argument("--users", help="comma-separated user counts, e.g. 1,10")
    parser.add_argument(
        "--configs", help="comma-separated slugs, e.g. embedded-b16,redis-2w-b16,redis-4w-b1"
    )
    parser.add_argument("--warmup-s", type=float, help="seconds after the last log-in")
    parser.add_argument("--measure-s", type=float, help="measured seconds per run")
    parser.add_argument("--think-time", type=float, help="mean pause between a user's tasks")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also run the embedded and Redis 1-worker batch-16 configurations with the "
        "prediction cache on (off by default)",
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--login", choices=["signup", "admin"], help="a new account per user")
    parser.add_argument("--note", help="a line to print at the top of the report")
    parser.add_argument("--no-report", action="store_true", help="leave docs/ untouched")
    parser.add_argument("--report-from", type=Path, help="only rewrite the report from a run")
    args = parser.parse_args()

    from stress_test.report import collect_environment, write_report

    if args.report_from:
        results = json.loads(args.report_from.read_text())
        if args.note:
            results["note"] = args.note
            args.report_from.write_text(json.dumps(results, indent=1))
        print(f"report: {write_report(results)}")
        return
    preset_name = "quick" if args.quick else "full"
    preset = PRESETS[preset_name]
    configs = preset.configs
    if args.configs:
        configs = tuple(_parse_slug(slug) for slug in args.configs.split(","))
    if args.cache:
        configs += (
            StackConfig("embedded", cache=True),
            StackConfig("redis", workers=1, cache=True),
        )
    users = tuple(int(u) for u in args.users.split(",")) if args.users else preset.users
    overrides = {
        "warmup_s": args.warmup_s,
        "measure_s": args.measure_s,
        "think_time_s": args.think_time,
        "login": args.login,
        "postgres": args.postgres or None,
    }
    options = RunOptions(
        **{**asdict(preset.options), **{k: v for k, v in overrides.items() if v is not None}}
    )
    out_dir = RESULTS / f"{datetime.now():%Y%m%d-%H%M%S}-{preset_name}"
    out_dir.mkdir(parents=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    print(
        f"{preset_name} matrix: {len(configs)} configurations x users {users}, "
        f"{options.measure_s:g} s measured each; results in {out_dir}",
        flush=True,
    )
    per_level = options.warmup_s + options.measure_s + 8  # Locust's start, log-ins, stop
    estimate = len(configs) * (10 + len(users) * per_level + sum(users) * 0.1)
    print(f"expected to take about {estimate / 60:.0f} minutes", flush=True)
    started = time.monotonic()
    results = {
        "preset": preset_name,
        "command": " ".join(["python stress_test/run_matrix.py", *sys.argv[1:]]),
        "options": asdict(options),
        "users": list(users),
        "configs": [asdict(c) | {"slug": c.slug, "name": c.name} for c in configs],
        "environment": collect_environment(),
        "started": datetime.now().isoformat(timespec="seconds"),
        "note": args.note,
    }
    results["runs"] = []
    try:
        run_matrix(configs, users, options, out_dir, runs=results["runs"])
    except BaseException as error:
        results["duration_s"] = round(time.monotonic() - started)
        results["incomplete"] = repr(error)
        save_results(results, out_dir)
        print(f"stopped ({error!r}); everything started was stopped; the configurations "
              f"finished so far are in {out_dir / 'results.json'}", file=sys.stderr)  # fmt: skip
        if isinstance(error, KeyboardInterrupt):
            raise SystemExit(130) from None
        raise
    results["duration_s"] = round(time.monotonic() - started)
    path = save_results(results, out_dir)
    print(f"results: {path} ({results['duration_s']} s)")
    if not args.no_report:
        print(f"report: {write_report(results)}")


def _parse_slug(slug: str) -> StackConfig:
    """embedded-b16, redis-2w-b1, ...-cache"""
    parts = slug.split("-")
    cache = parts[-1] == "cache"
    batch = int(next(p for p in parts if p.startswith("b"))[1:])
    if parts[0] == "embedded":
        return StackConfig("embedded", max_batch_size=batch, cache=cache)
    workers = int(parts[1].rstrip("w"))
    return StackConfig("redis", workers=workers, max_batch_size=batch, cache=cache)


if __name__ == "__main__":
    main()
