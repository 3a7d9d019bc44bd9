"""The report's plots (matplotlib, Agg backend) as docs/img/stress-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from stress_test.runs import Runs, predict_ms, predict_rps


def _series(ax: Axes, runs: Runs, slug: str, metric: str, **style: Any) -> None:
    points = runs.of(slug)
    users = [r["users"] for r in points]
    values = [predict_rps(r) if metric == "rps" else predict_ms(r) for r in points]
    ax.plot(users, values, marker="o", label=runs.name(slug), **style)


def _axes(ax: Axes, users: list[int], metric: str) -> None:
    ax.set_xscale("log")
    ax.set_xticks(users, [str(u) for u in users])
    ax.minorticks_off()
    ax.set_xlabel("concurrent Locust users")
    if metric == "rps":
        ax.set_ylabel("predictions/s")
        ax.set_ylim(bottom=0)
    else:
        ax.set_ylabel("prediction p95 latency, ms (log scale)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_plots(runs: Runs, img_dir: Path) -> dict[str, str]:
    """Write the plots this run has data for; {file name: title}."""
    img_dir.mkdir(parents=True, exist_ok=True)
    users = sorted({r["users"] for r in runs.runs})
    batch16 = [s for s in runs.slugs if runs.of(s)[0]["max_batch_size"] == 16]
    batch16 = [s for s in batch16 if not runs.of(s)[0]["cache"]]
    images: dict[str, str] = {}

    def styled(slug: str) -> dict[str, Any]:
        return (
            {"linestyle": "--", "color": "black"} if runs.of(slug)[0]["mode"] == "embedded" else {}
        )

    charts = {
        "stress-throughput.png": ("Throughput vs users, by number of Redis workers", "rps"),
        "stress-latency.png": ("Prediction p95 latency vs users", "p95"),
    }
    for name, (title, metric) in charts.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for slug in batch16:
            _series(ax, runs, slug, metric, **styled(slug))
        ax.set_title(title + " (batch 16)")
        _axes(ax, users, metric)
        _save(fig, img_dir / name)
        images[name] = title

    pairs = [
        (slug, runs.find(run["mode"], run["workers"], 1))
        for slug in batch16
        for run in [runs.of(slug)[0]]
        if runs.find(run["mode"], run["workers"], 1)
    ]
    comparisons = {
        "stress-batching.png": ("Batching on (max batch 16) vs off (max batch 1)", pairs),
        "stress-modes.png": (
            "Embedded vs Redis (1 worker), batch 16",
            [(runs.find("embedded"), runs.find("redis", 1))]
            if runs.find("embedded") and runs.find("redis", 1)
            else [],
        ),
    }
    for name, (title, compared) in comparisons.items():
        if not compared:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for index, (first, second) in enumerate(compared):
            color = f"C{index}"
            for slug, line in ((first, "-"), (second, ":")):
                assert slug is not None
                for ax, metric in ((left, "rps"), (right, "p95")):
                    _series(ax, runs, slug, metric, color=color, linestyle=line)
        _axes(left, users, "rps")
        _axes(right, users, "p95")
        fig.suptitle(title)
        _save(fig, img_dir / name)
        images[name] = title

    top = max(users)
    fig, ax = plt.subplots(figsize=(10, 4.4))
    found = {role for r in runs.runs for role in r["cpu"]["processes"]}
    order = ["api", *sorted(r for r in found if r.startswith("worker")), "redis", "postgres"]
    roles = [r for r in [*order, "locust", "runner"] if r in found] + ["others"]
    labels = [runs.name(s) for s in runs.slugs]
    bottoms = [0.0] * len(runs.slugs)
    for index, role in enumerate(roles):
        values = []
        for slug in runs.slugs:
            run = runs.at(slug, top)
            cpu = run["cpu"] if run else {"processes": {}, "others": 0}
            values.append(cpu["others"] if role == "others" else cpu["processes"].get(role, 0))
        color = "lightgrey" if role == "others" else f"C{index % 10}"
        ax.bar(labels, values, bottom=bottoms, label=role, color=color)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    cores = runs.runs[0]["cpu"]["cores"]
    ax.axhline(100 * cores, color="black", linewidth=1, linestyle="--", label=f"{cores} cores")
    ax.set_ylim(0, 100 * cores * 1.08)
    ax.set_ylabel("CPU, % of one core")
    ax.set_title(f"CPU by process at {top} users (mean over the measured window)")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    _save(fig, img_dir / "stress-cpu.png")
    images["stress-cpu.png"] = f"CPU by process at {top} users"
    for stale in img_dir.glob("stress-*.png"):  # a plot this run had no data for
        if stale.name not in images:
            stale.unlink()
    return images
