"""What the runner reads besides Locust's CSVs: CPU per process, sampled with psutil during a
run, and the service's own /metrics, scraped at the start and end of the measured window."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[int, float]  # (pid, create time): a pid reused by a new process is a new key


class CpuSampler(threading.Thread):
    """Cumulative CPU time of each process in the given process trees (the "runner" root
    alone, without its children), read every ``interval_s``; ``start_window``/``end_window``
    give each process's mean CPU in between, in % of one core (200% is both cores of a 2-core
    machine). A process is counted under the first role whose tree it is found in."""

    def __init__(self, roots: dict[str, int], interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval_s = interval_s
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._labels: dict[Key, str] = {}
        self._latest: dict[Key, float] = {}
        self._first: dict[Key, float] | None = None
        self._window_start = 0.0
        self._system_start: Any = None

    def _label(self, role: str, process: psutil.Process, root_pid: int, has_children: bool) -> str:
        """The role; worker processes are numbered in the order they are first seen."""
        if role != "worker":
            return role
        if process.pid == root_pid and has_children:
            return "worker supervisor"  # `imgclf worker --processes N` with N > 1
        numbered = [label for label in self._labels.values() if label[-1].isdigit()]
        return f"worker {len([n for n in numbered if n.startswith('worker ')]) + 1}"

    def sample(self) -> None:
        with self._lock:
            for role, root_pid in self.roots.items():
                try:
                    root = psutil.Process(root_pid)
                    children = [] if role == "runner" else root.children(recursive=True)
                    processes = [root, *children]
                except psutil.Error:
                    continue
                for process in processes:
                    try:
                        key = (process.pid, process.create_time())
                        times = process.cpu_times()
                    except psutil.Error:
                        continue
                    if key not in self._labels:
                        self._labels[key] = self._label(role, process, root_pid, len(processes) > 1)
                    self._latest[key] = times.user + times.system

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def start_window(self) -> None:
        self.sample()
        with self._lock:
            self._first = dict(self._latest)
            self._window_start = time.monotonic()
            self._system_start = psutil.cpu_times()

    def end_window(self) -> dict[str, Any]:
        """{"processes": {label: %}, "ours": %, "machine": %, "others": %, "cores": n}."""
        self.sample()
        self._stop_event.set()
        with self._lock:
            first = self._first or {}
            wall = time.monotonic() - self._window_start
            per_label: dict[str, float] = {}
            window_began_at = time.time() - wall
            for key, seconds in self._latest.items():
                if key in first:
                    used = seconds - first[key]
                else:  # born inside the window (a restarted worker): all its time counts
                    used = seconds if key[1] >= window_began_at else 0.0
                label = self._labels[key]
                per_label[label] = per_label.get(label, 0.0) + used
            system_end = psutil.cpu_times()
        cores = psutil.cpu_count() or 1
        total = sum(system_end) - sum(self._system_start)
        idle = (system_end.idle + getattr(system_end, "iowait", 0.0)) - (
            self._system_start.idle + getattr(self._system_start, "iowait", 0.0)
        )
        machine = 100.0 * cores * (total - idle) / total if total > 0 else 0.0
        processes = {label: 100.0 * used / wall for label, used in sorted(per_label.items())}
        ours = sum(processes.values())
        return {
            "processes": {label: round(pct, 1) for label, pct in processes.items()},
            "ours": round(ours, 1),
            "machine": round(machine, 1),
            "others": round(max(0.0, machine - ours), 1),
            "cores": cores,
            "window_s": round(wall, 2),
        }


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{label="v",...}': value}."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the service did in the window: batch sizes formed, model and queue time, cache."""

    def diff(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    buckets: list[tuple[float, float]] = []
    for name in after:
        if name.startswith("imgclf_batch_size_bucket{"):
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), diff(name)))
    buckets.sort()
    jobs_by_size: dict[str, float] = {}
    below = previous = 0.0
    for bound, cumulative in buckets:
        if bound == float("inf"):
            label = f">{previous:g}"
        else:
            label = f"{bound:g}" if bound == previous + 1 else f"{previous + 1:g}-{bound:g}"
        if cumulative - below:
            jobs_by_size[label] = cumulative - below
        below, previous = cumulative, bound
    jobs = diff("imgclf_batch_size_count{}")
    inference_jobs = diff("imgclf_inference_seconds_count{}")
    wait_jobs = diff("imgclf_queue_wait_seconds_count{}")
    hits = diff("imgclf_cache_hits_total{}")
    misses = diff("imgclf_cache_misses_total{}")
    errors = sum(
        diff(name)
        for name in after
        if name.startswith(("imgclf_job_errors_total", "imgclf_jobs_rejected_total"))
    )
    return {
        "jobs": jobs,
        "mean_batch_size": diff("imgclf_batch_size_sum{}") / jobs if jobs else None,
        "jobs_by_batch_size": jobs_by_size,
        "mean_inference_ms": (
            1000 * diff("imgclf_inference_seconds_sum{}") / inference_jobs
            if inference_jobs
            else None
        ),
        "mean_queue_wait_ms": (
            1000 * diff("imgclf_queue_wait_seconds_sum{}") / wait_jobs if wait_jobs else None
        ),
        "cache_hits": hits,
        "cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "job_errors": errors,
        "workers": after.get("imgclf_workers{}"),
    }
