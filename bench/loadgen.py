"""A lean HTTP/1.1 load generator for the benchmarks: asyncio streams, keep-alive, one request
prepared once. It spends a few tens of microseconds per request, so on a 2-core machine the
service, not the client, is what gets measured (httpx would cost ~10x more per request)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def multipart_request(url: str, token: str, filename: str, content: bytes) -> bytes:
    parts = urlsplit(url)
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class LoadResult:
    samples: list[tuple[int, float]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def record(self, status: int, latency_ms: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.samples.append((status, latency_ms))

    def latencies(self, status: int | None = 200) -> list[float]:
        return [ms for code, ms in self.samples if status is None or code == status]

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float, status: int | None = 200) -> float:
        """The q-th percentile latency of the answers with this status (None: all)."""
        latencies = self.latencies(status)
        if not latencies:
            return float("nan")
        if len(latencies) == 1:
            return latencies[0]
        return statistics.quantiles(latencies, n=100, method="inclusive")[int(q) - 1]


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> int:
        status_line = await self._exchange(request)
        if not status_line:
            # The server closed an idle keep-alive connection: once more on a fresh one.
            self.close()
            status_line = await self._exchange(request)
        assert self.reader is not None
        status = int(status_line.split()[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    async def _exchange(self, request: bytes) -> bytes:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        return await self.reader.readline()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    url: str, request: bytes, clients: int, duration_s: float, warmup_s: float = 2.0
) -> LoadResult:
    """``clients`` users, each sending its next request as soon as the last one is answered."""
    parts = urlsplit(url)
    result = LoadResult()
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def user() -> None:
        connection = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            status = await connection.send(request)
            done = time.perf_counter()
            if sent >= measure_from and done <= stop_at:
                result.record(status, (done - sent) * 1000)
        connection.close()

    await asyncio.gather(*(user() for _ in range(clients)))
    result.elapsed_s = duration_s
    return result


async def open_loop(
    url: str,
    request: bytes,
    rate: float,
    duration_s: float,
    warmup_s: float = 2.0,
    connections: int = 256,
) -> LoadResult:
    """Requests arrive at a fixed rate whatever the answers do (as real traffic does)."""
    parts = urlsplit(url)
    result = LoadResult()
    idle: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()  # reuse the warm ones first
    for _ in range(connections):
        idle.put_nowait(Connection(parts.hostname or "127.0.0.1", parts.port or 80))
    start = time.perf_counter()
    measure_from = start + warmup_s
    total = int((warmup_s + duration_s) * rate)
    tasks = []

    async def one(scheduled: float) -> None:
        connection = await idle.get()
        try:
            status = await connection.send(request)
        except (OSError, IndexError, asyncio.IncompleteReadError):
            # Counted as a failed request (status 0): a long run must not stop on one.
            connection.close()
            status = 0
        finally:
            idle.put_nowait(connection)
        done = time.perf_counter()
        if scheduled >= measure_from:
            # Latency from when the request was due, so queueing in the client counts too.
            result.record(status, (done - scheduled) * 1000)

    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed_s = duration_s
    return result
