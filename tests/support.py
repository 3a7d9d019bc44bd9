"""Helpers for tests that run real worker processes next to an app under test."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import redis

from imgclf.api.security import password_hashing
from imgclf.launcher import Child, LaunchFailed, environment, imgclf_command, wait_until
from imgclf.localservers import free_port, port_open
from imgclf.queue.keys import RedisKeys
from imgclf.settings import Settings

DOG_JPEG = Path(__file__).parent / "data" / "dog.jpeg"
# Argon2id at its least cost, for the tests and the servers they start (the production cost
# takes 0.15 s a hash, and the suite signs up and logs in hundreds of times). Tests about what
# a hash costs set the production cost themselves.
CHEAP_ARGON2 = {"password_hash_time_cost": 1, "password_hash_memory_kib": 1024}
CHEAP_HASHING = password_hashing(Settings.model_construct(**CHEAP_ARGON2))
# The defaults, which production must not go below, for the tests about what a hash costs.
DEFAULT_ARGON2 = {name: Settings.model_fields[name].default for name in CHEAP_ARGON2}
DEFAULT_HASHING = password_hashing(Settings.model_construct(**DEFAULT_ARGON2))


def dog_upload(name: str = "dog.jpeg") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, DOG_JPEG.read_bytes(), "image/jpeg")}


def start_worker(
    redis_url: str, model_dir: Path, log: Path | None = None, **settings: object
) -> subprocess.Popen[bytes]:
    """One `python -m imgclf.worker` process (as `imgclf worker --processes N` starts them);
    its output goes to ``log`` when given."""
    defaults = {"model_threads": 1, "worker_heartbeat_s": 0.5}
    env = environment({**defaults, "queue_url": redis_url, "model_dir": model_dir, **settings})
    command = [sys.executable, "-m", "imgclf.worker"]
    if log is None:
        return subprocess.Popen(command, env=env)
    with log.open("ab") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def live_workers(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = RedisKeys()
        names = client.smembers(keys.workers)
        return sum(int(client.exists(keys.worker(name.decode()))) for name in names)
    finally:
        client.close()


def wait_for_workers(redis_url: str, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while live_workers(redis_url) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not report alive within {timeout_s} s")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


class PeakMemory:
    """The highest resident memory of a process (this one by default), sampled every 10 ms
    while the ``with`` block runs; ``grown_mb``: how far above its start."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until_live(url: str) -> None:
    """Until GET ``{url}/health/live`` answers 200; TimeoutError after 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} never answered /health/live")


def signed_up(url: str, name: str) -> str:
    """A new account's access token from a served API: ``name``@example.com."""
    account = {"name": name, "email": f"{name}@example.com", "password": "correct horse b"}
    assert httpx.post(f"{url}/user/", json=account).status_code == 201
    login = {"username": account["email"], "password": account["password"]}
    return str(httpx.post(f"{url}/login", data=login).json()["access_token"])


class ServedApi:
    """``imgclf serve`` as its own process on a free loopback port, as production runs it
    (uvicorn with the service's HTTP protocol), its output kept in ``log``.
    ``with ServedApi(...) as api``: serving (/health/live answers); stopped after."""

    def __init__(self, log: Path, data_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.data_dir = data_dir
        env = environment(
            {
                "data_dir": data_dir,
                "port": self.port,
                "access_log": False,
                **CHEAP_ARGON2,
                **settings,
            },
            clean=True,
        )
        self.child = Child("api", [*imgclf_command(), "serve"], env, log, cwd=data_dir.parent)
        self._stopped = False
        try:
            self.child.start()
            what = f"imgclf serve on port {self.port}"
            wait_until(lambda: port_open(self.port), what, 90, [self.child])
            wait_until_live(self.url)
        except (LaunchFailed, TimeoutError) as error:
            self.stop()
            raise LaunchFailed(f"{error}\n{self.output()[-3000:]}") from None
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> ServedApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server; once stopped, a second call does nothing (tests stop it early)."""
        if not self._stopped:
            self.child.stop()
            self._stopped = True

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def sample_photos(count: int) -> list[bytes]:
    """``count`` distinct JPEG photos: the pictures scikit-image and matplotlib ship (no
    download), whole and in corner crops."""
    import io

    from imgclf.model.calibration import packaged_pictures

    photos: list[bytes] = []
    pictures = [picture.image.convert("RGB") for picture in packaged_pictures()]
    boxes = [(0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 0.7, 0.7), (0.3, 0.3, 1.0, 1.0), (0.3, 0.0, 1.0, 0.7)]
    for left, top, right, bottom in boxes:
        for image in pictures:
            width, height = image.size
            crop = image.crop(
                (int(left * width), int(top * height), int(right * width), int(bottom * height))
            )
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=90)
            photos.append(buffer.getvalue())
            if len(photos) == count:
                return photos
    raise ValueError(f"only {len(photos)} sample photos can be made")


def sample_uploads(count: int) -> list[dict[str, tuple[str, bytes, str]]]:
    return [
        {"file": (f"photo{n}.jpg", data, "image/jpeg")}
        for n, data in enumerate(sample_photos(count))
    ]
