"""docs/stress-test-report.md and docs/img/stress-*.png, written from a run's results.json.

Every number in the report is read from the results; the sentences of the analysis are chosen
by comparing those numbers (see analysis.py), so a run that disagrees with the last one gets a
report that says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.service import cpu_model
from stress_test.analysis import COMPETING, analyse, headline
from stress_test.photos import load_photos
from stress_test.plots import draw_plots
from stress_test.runs import Runs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "stress-test-report.md"
IMG = ROOT / "docs" / "img"
LIBRARIES = (
    "imgclf", "locust", "onnxruntime", "fastapi", "uvicorn", "starlette", "pydantic",
    "sqlalchemy", "redis", "numpy", "pillow", "psutil", "matplotlib",
)  # fmt: skip
SETTINGS = (
    "max_batch_wait_ms", "web_concurrency", "max_pending", "predict_timeout_s",
    "queue_max_length", "top_k",
)  # fmt: skip


def _os_name() -> str:
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _redis_version() -> str:
    try:
        output = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return "not installed"
    return next((p[2:] for p in output.split() if p.startswith("v=")), output.strip())


def collect_environment() -> dict[str, Any]:
    """The machine, the software and the service settings the run used, read here."""
    from imgclf.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{_os_name()}, Linux {platform.release()}, {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": versions,
        "redis_server": _redis_version(),
        "settings": {name: getattr(settings, name) for name in SETTINGS}
        | {
            "model_threads": settings.resolved_model_threads,
            "worker_concurrency": settings.resolved_worker_concurrency,
        },
        "loadavg": [round(v, 2) for v in psutil.getloadavg()],
    }


NONE = "-"


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f}"


def _config_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| users | req/s | predictions/s | predict p50 / p95 / p99 ms | all p95 ms | failures "
        "| mean batch | jobs batched ≥2 | model ms per batch | queue wait ms "
        "| CPU % by process | machine CPU % (others) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        predict = run["predict"] or {}
        service = run["service"]
        jobs = service["jobs"] or 0
        batched = jobs - service["jobs_by_batch_size"].get("1", 0)
        cpu = run["cpu"]
        processes = ", ".join(f"{k} {v:.0f}" for k, v in cpu["processes"].items())
        mean_batch = service["mean_batch_size"]
        lines.append(
            f"| {run['users']} | {run['rps']:.1f} | {predict.get('rps', 0):.1f} "
            f"| {_ms(predict.get('p50_ms'))} / {_ms(predict.get('p95_ms'))} / "
            f"{_ms(predict.get('p99_ms'))} | {_ms(run['p95_ms'])} | {run['failures']} "
            f"| {NONE if mean_batch is None else f'{mean_batch:.2f}'} "
            f"| {f'{100 * batched / jobs:.0f}%' if jobs else NONE} "
            f"| {_ms(service['mean_inference_ms'])} | {_ms(service['mean_queue_wait_ms'])} "
            f"| {processes} | {cpu['machine']:.0f} ({cpu['others']:.0f}) |"
        )
    return lines


def _failures(runs: list[dict[str, Any]]) -> list[str]:
    rows = [
        f"| {run['name']} | {run['users']} | {failure['name']} | {failure['error']} "
        f"| {failure['occurrences']} |"
        for run in runs
        for failure in run["failure_messages"]
    ]
    warmup = [
        f"| {run['name']} | {run['users']} | (warm-up) {error['name']} | {error['error']} "
        f"| {error['occurrences']} |"
        for run in runs
        for error in run["warmup"]["errors"]
    ]
    if not rows and not warmup:
        return ["No request failed, in the measured windows or in the warm-ups."]
    return [
        "| configuration | users | request | status and detail | count |",
        "|---|---:|---|---|---:|",
        *rows,
        *warmup,
    ]


def _environment(env: dict[str, Any], results: dict[str, Any]) -> list[str]:
    libraries = ", ".join(f"{k} {v}" for k, v in env["libraries"].items())
    settings = ", ".join(f"`{k}` = {v}" for k, v in env["settings"].items())
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {env['cpu']} |",
        f"| cores | {env['cores']} logical ({env['physical_cores']} physical) |",
        f"| memory | {env['memory_gib']} GiB |",
        f"| OS | {env['os']} |",
        f"| Python | {env['python']} |",
        f"| libraries | {libraries} |",
        f"| redis-server | {env['redis_server']} |",
        f"| database | {'PostgreSQL' if results['options']['postgres'] else 'SQLite'} |",
        f"| service settings | {settings}; the matrix sets `max_batch_size`, the cache and "
        "the queue per configuration |",
        f"| load average before the run | {', '.join(map(str, env['loadavg']))} |",
    ]


def _photos() -> str:
    from io import BytesIO

    from PIL import Image

    parts = []
    for name, content in load_photos().items():
        width, height = Image.open(BytesIO(content)).size
        parts.append(f"`{name}` {width}x{height} ({len(content) / 1024:,.0f} KB)")
    return ", ".join(parts)


def _spawn_rates(results: dict[str, Any]) -> dict[int, int]:
    return {run["users"]: run["spawn_rate"] for run in results["runs"]}


def render(results: dict[str, Any], images: dict[str, str], img_path: str = "img") -> str:
    runs = Runs(results["runs"], results["options"]["think_time_s"])
    env = results["environment"]
    options = results["options"]
    quick = results["preset"] == "quick"
    started = datetime.fromisoformat(results["started"])
    lines = ["# Stress test: how imgclf scales with users, workers and batching", ""]
    others = [run["cpu"]["others"] for run in results["runs"]]
    mean_others = sum(others) / len(others)
    shared = mean_others > 100 * env["cores"] * COMPETING
    if quick or shared:
        lines += [
            "> "
            + ("**Quick run** (`--quick`): fewer configurations, " if quick else "")
            + f"{options['measure_s']:g} s measured per point"
            + (
                f", **on a shared machine**: other processes used {mean_others:.0f}% of a core "
                "on average during the measured windows (the *others* in the CPU columns)"
                if shared
                else ""
            )
            + ". Treat the figures as indicative; `make stress` on a quiet machine runs the "
            "full matrix.",
            "",
        ]
    if results.get("note"):
        lines += [f"> Note: {results['note']}", ""]
    lines += [
        f"Generated by `{results['command']}` on {started:%Y-%m-%d %H:%M}, "
        f"in {results['duration_s'] / 60:.1f} minutes. Every figure here is read from that "
        "run's `results.json` (under `stress_test/results/`, not committed).",
        "",
        "## Headline",
        "",
        headline(runs, env),
        "",
        "## Hardware and software",
        "",
        *_environment(env, results),
        "",
        "## How it was measured",
        "",
        "```bash",
        "make stress-quick   # 3 configurations x 1, 10, 50 users, batch 16: under 5 minutes",
        "make stress         # the full matrix (embedded and Redis with 1, 2, 4 workers; batch "
        "16 and 1; 1-100 users)",
        "python stress_test/run_matrix.py --configs embedded-b16,redis-2w-b1 --users 1,50 "
        "--measure-s 30 [--cache] [--postgres]",
        "```",
        "",
        "- For each configuration the runner starts the real service (`imgclf serve`; in Redis "
        "mode also a `redis-server` on a free port and `imgclf worker --processes N`) with a "
        f"fresh {'PostgreSQL' if options['postgres'] else 'SQLite'} database, waits for "
        "`/health/ready` with every worker alive, then runs "
        "`locust -f stress_test/locustfile.py --headless -u U -r R --csv ... --only-summary` "
        "once per number of users U (spawn rate R: "
        + ", ".join(f"{rate}/s for {u}" for u, rate in sorted(_spawn_rates(results).items()))
        + ")."
        + (
            f" `IMGCLF_WEB_CONCURRENCY` = {env['settings']['web_concurrency']}: `/metrics` "
            "answers for all the API processes together (multiprocess mode)."
            if env["settings"]["web_concurrency"] > 1
            else ""
        ),
        (
            "- Each Locust user signs up (`POST /user/`) and logs in (`POST /login`) once, then "
            if options["login"] == "signup"
            else "- Each Locust user logs in once as the development admin (`--login admin`: "
            "`POST /login`, no sign-up), then "
        )
        + "loops over tasks with weights predict 8, feedback 2 (on its last prediction, with "
        "`prediction_id`), history 2 (`GET /model/predictions`), index 1 (`GET /`), pausing "
        f"{0.5 * options['think_time_s']:g}-{1.5 * options['think_time_s']:g} s between tasks. "
        "A user waits for each answer, so U users offer at most about U requests per "
        "(pause + latency).",
        f"- Photos, uploaded at random: {_photos()}. "
        f"{100 * options['unique_share']:.0f}% of uploads carry a unique JPEG comment (a new "
        "md5), so the cache could never answer everything; the runs here have the cache "
        + (
            "off, except the configurations marked *cache on*."
            if any(c["cache"] for c in results["configs"])
            else "off (`--cache` adds cache-on runs)."
        ),
        "- **Warm-up left out.** Sign-ups and log-ins hash or verify passwords with Argon2, "
        "which costs tens of milliseconds of CPU each; the first requests also meet a cold "
        "model. The locustfile resets Locust's statistics "
        f"{options['warmup_s']:g} s after the last user has logged in (a fixed warm-up could "
        "end before 100 log-ins do), then measures "
        f"{options['measure_s']:g} s and stops. The runner reads `/metrics` and starts its CPU "
        "window at that reset, and closes both when the window ends. Log-ins took "
        f"{runs.login_range()} from the start of a run.",
        "- **CPU** is sampled with psutil every second per process (API, each worker, "
        "redis-server, Locust) and given as the mean over the window in % of one core, so "
        f"{100 * env['cores']}% is the whole machine. *Machine* is all CPU in use, *others* "
        "what processes outside the test used (the runner itself is listed as *runner*). "
        "**Locust runs on the same cores as the service "
        "and takes its share of them**; its column shows how much.",
        "- Latency is Locust's, at the client: upload, queue, model, database and answer. "
        "*Mean batch* is the size of the batch each prediction ran in (job-weighted, from "
        "`imgclf_batch_size` in `/metrics`); *model ms per batch* is the ONNX Runtime time of "
        "that batch (`imgclf_inference_seconds`).",
        "",
        "## Results",
        "",
    ]
    for slug in runs.slugs:
        config_runs = runs.of(slug)
        lines += [f"### {config_runs[0]['name']}", "", *_config_table(config_runs), ""]
    lines += ["### Plots", ""]
    lines += [f"![{title}]({img_path}/{name})" for name, title in images.items()]
    lines += ["", "### Failures", "", *_failures(results["runs"]), ""]
    lines += ["## Analysis", "", *analyse(runs, env), ""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], doc: Path = DOC, img_dir: Path = IMG) -> Path:
    """Write the plots and the report; returns the report's path."""
    images = draw_plots(Runs(results["runs"], results["options"]["think_time_s"]), img_dir)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(results, images, os.path.relpath(img_dir, doc.parent)))
    return doc
