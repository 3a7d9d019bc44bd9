"""deploy/healthcheck.py's worker check against a real Redis: healthy while this host's worker
keeps its heartbeat key, unhealthy once it retires or when Redis is away. (The api and ui checks
run against a live `imgclf up` in tests/test_up.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imgclf.localservers import free_port
from imgclf.queue.redis_source import RedisJobSource

SCRIPT = Path(__file__).parents[2] / "deploy" / "healthcheck.py"


def check(role: str, queue_url: str) -> int:
    env = {**os.environ, "IMGCLF_QUEUE_URL": queue_url}
    command = [sys.executable, str(SCRIPT), role]
    return subprocess.run(command, env=env, timeout=30, check=False).returncode


def test_worker_is_healthy_while_its_heartbeat_is_fresh(redis_url: str) -> None:
    assert check("worker", redis_url) == 1
    source = RedisJobSource(
        redis_url, models=["efficientnet-lite0"], visibility_timeout_s=1, max_deliveries=3
    )
    try:
        source.heartbeat(30, {"serves": ["efficientnet-lite0"], "loaded": [], "versions": []})
        assert check("worker", redis_url) == 0
        source.retire()
        assert check("worker", redis_url) == 1
    finally:
        source.close()


def test_worker_is_unhealthy_without_redis() -> None:
    assert check("worker", f"redis://127.0.0.1:{free_port()}/0") == 1


def test_unknown_role_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "db"], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "usage" in result.stderr
