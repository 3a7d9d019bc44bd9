"""The runs of a matrix, read back from results.json, and the saturation test on them.

A closed-loop Locust user asks for one request per (pause + latency), so U users would ask an
idle service for U / (pause + the 1-user latency) requests/s. A configuration is *saturated*
from the first number of users that got under 80% of that: the users are waiting on the
service.
"""

from __future__ import annotations

from typing import Any

SATURATED = 0.80


def predict_rps(run: dict[str, Any]) -> float:
    return float((run["predict"] or {}).get("rps", 0.0))


def predict_ms(run: dict[str, Any], percentile: str = "p95_ms") -> float:
    return float((run["predict"] or {}).get(percentile) or 0.0)


class Runs:
    """The runs of a matrix, by configuration and number of users."""

    def __init__(self, runs: list[dict[str, Any]], think_time_s: float = 1.0) -> None:
        self.runs = runs
        self.think_time_s = think_time_s
        self.slugs = list(dict.fromkeys(run["config"] for run in runs))

    def of(self, slug: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.runs if r["config"] == slug), key=lambda r: r["users"])

    def find(self, mode: str, workers: int = 0, batch: int = 16, cache: bool = False) -> str | None:
        wanted = (mode, workers, batch, cache)
        for run in self.runs:
            if (run["mode"], run["workers"], run["max_batch_size"], run["cache"]) == wanted:
                return str(run["config"])
        return None

    def name(self, slug: str) -> str:
        return str(self.of(slug)[0]["name"])

    def peak(self, slug: str) -> dict[str, Any]:
        return max(self.of(slug), key=predict_rps)

    def at(self, slug: str, users: int) -> dict[str, Any] | None:
        return next((r for r in self.of(slug) if r["users"] == users), None)

    def common(self, first: str, second: str) -> tuple[int, int]:
        """The fewest and the most users that both configurations ran with."""
        both = {r["users"] for r in self.of(first)} & {r["users"] for r in self.of(second)}
        return min(both), max(both)

    def pair(self, first: str, second: str, users: int) -> tuple[dict[str, Any], dict[str, Any]]:
        one, other = self.at(first, users), self.at(second, users)
        if one is None or other is None:
            raise KeyError(f"{first} or {second} has no run with {users} users")
        return one, other

    def demand(self, slug: str, users: int) -> float:
        """Requests/s that ``users`` would ask of an idle service."""
        first = self.of(slug)[0]
        latency_s = (first.get("avg_ms") or 0.0) / 1000
        return users / (self.think_time_s + latency_s)

    def share(self, run: dict[str, Any]) -> float:
        demand = self.demand(run["config"], run["users"])
        return float(run["rps"]) / demand if demand else 0.0

    def saturated_at(self, slug: str) -> dict[str, Any] | None:
        return next((r for r in self.of(slug) if self.share(r) < SATURATED), None)

    def saturated(self, slug: str, users: int | None = None) -> bool:
        """Saturated at all, or by ``users`` users."""
        run = self.saturated_at(slug)
        return run is not None and (users is None or run["users"] <= users)

    def login_range(self) -> str:
        times = [r["warmup"]["logins_done_s"] for r in self.runs]
        users = [r["users"] for r in self.runs if r["warmup"]["logins_done_s"] == max(times)]
        return f"{min(times):.1f}-{max(times):.1f} s (the longest with {n_users(users[0])})"


def n_users(count: int) -> str:
    return f"{count} user" if count == 1 else f"{count} users"
