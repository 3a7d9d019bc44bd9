"""`imgclf up --monitor`: a Prometheus beside the local stack, scraping the API and each model
worker every 2 s and evaluating the alert rules of ``deploy/prometheus/rules.yml``.

Prometheus is Debian's `prometheus` package (or any ``prometheus`` on the PATH); its data lives
in `up`'s scratch folder and goes with it.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from imgclf.localservers import ServerUnavailable, free_port

# In a source checkout; an installed package runs without rules unless given some.
CHECKOUT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
SCRAPE_INTERVAL = "2s"


def default_rules() -> Path | None:
    return CHECKOUT_RULES if CHECKOUT_RULES.exists() else None


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise ServerUnavailable("no `prometheus` on the PATH (Debian: apt-get install prometheus)")
    return found


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (a worker's exporters)."""
    for _ in range(50):
        first = free_port()
        if all(_bindable(first + offset) for offset in range(1, count)):
            return first
    raise ServerUnavailable(f"no {count} consecutive free ports for the workers' metrics")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prometheus_config(
    scratch: Path, api: str, token: str, worker_ports: list[int], rules: Path | None
) -> Path:
    """Write the configuration (JSON is YAML) and the token file; returns the config's path."""
    (scratch / "metrics-token").write_text(token)
    (scratch / "metrics-token").chmod(0o600)
    jobs: list[dict[str, object]] = [
        {
            "job_name": "imgclf-api",
            "authorization": {"type": "Bearer", "credentials_file": "metrics-token"},
            "static_configs": [{"targets": [api]}],
        }
    ]
    if worker_ports:
        targets = [f"127.0.0.1:{port}" for port in worker_ports]
        jobs.append({"job_name": "imgclf-worker", "static_configs": [{"targets": targets}]})
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)] if rules else [],
        "scrape_configs": jobs,
    }
    path = scratch / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def prometheus_command(config: Path, data: Path, port: int) -> list[str]:
    return [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
    ]
