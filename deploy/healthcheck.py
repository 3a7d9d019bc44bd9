"""Container health checks: ``python healthcheck.py api|worker|ui`` exits 0 when healthy.

The slim base image has no curl, so the HTTP checks use the standard library. The worker has no
HTTP port: it is healthy while one of this container's worker processes keeps its heartbeat key
alive in Redis (the key's TTL is three heartbeats, so a hung or dead worker loses it quickly).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed local URL
            return bool(response.status == 200)
    except OSError:
        return False


def api() -> bool:
    port = os.environ.get("IMGCLF_PORT", "8000")
    return http_ok(f"http://127.0.0.1:{port}/health/live")


def ui() -> bool:
    port = os.environ.get("IMGCLF_UI_PORT", "8501")
    return http_ok(f"http://127.0.0.1:{port}/_stcore/health")


def worker() -> bool:
    import redis

    from imgclf.queue.keys import RedisKeys

    # Worker names start with the host name, which in a container is the container's own.
    pattern = RedisKeys().worker(f"{socket.gethostname()}-*")
    client = redis.Redis.from_url(os.environ["IMGCLF_QUEUE_URL"], socket_timeout=3)
    try:
        return any(True for _ in client.scan_iter(pattern, count=1000))
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


CHECKS = {"api": api, "ui": ui, "worker": worker}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: healthcheck.py {'|'.join(CHECKS)}")
    sys.exit(0 if CHECKS[sys.argv[1]]() else 1)
