"""Redis key names, in one place so the API and the workers agree."""

from dataclasses import dataclass


def redis_text(value: bytes | str) -> str:
    """A name or value read from Redis, as text (clients may or may not decode replies)."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "imgclf"

    def jobs(self, model: str) -> str:
        """The job stream of the model ``model`` (a name): each model's jobs queue apart."""
        return f"{self.prefix}:jobs:{model}"

    @property
    def live(self) -> str:
        """Hash: model name -> its live version, the one new jobs are admitted for."""
        return f"{self.prefix}:live"

    @property
    def wanted(self) -> str:
        """Hash: model name -> a version being promoted, which its workers load beside."""
        return f"{self.prefix}:wanted"

    @property
    def shadow(self) -> str:
        """Hash: model name -> its shadow candidate and the share of uploads copied to it."""
        return f"{self.prefix}:shadow"

    @property
    def model_events(self) -> str:
        """Stream: a worker's note that it has loaded versions (a promotion waits on it)."""
        return f"{self.prefix}:model-events"

    @property
    def group(self) -> str:
        return f"{self.prefix}-workers"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def replies(self, instance: str) -> str:
        return f"{self.prefix}:replies:{instance}"

    def worker(self, name: str) -> str:
        """String, expiring: a worker's last heartbeat, which says what it serves."""
        return f"{self.prefix}:worker:{name}"

    @property
    def workers(self) -> str:
        """Set: the names of the workers with a heartbeat, read instead of scanning the keys
        (a scan walks every answer kept, thousands under load, to find a few workers); a name
        whose heartbeat has expired is dropped by whoever reads it next."""
        return f"{self.prefix}:workers"

    def owner(self, job_id: str) -> str:
        return f"{self.prefix}:owner:{job_id}"

    def jobs_of(self, owner: int) -> str:
        """List, expiring: an owner's async jobs, oldest first (``KEPT_JOBS_PER_OWNER``)."""
        return f"{self.prefix}:jobs-of:{owner}"

    def cache(self, model_id: str, owner: int, digest: str) -> str:
        return f"{self.prefix}:cache:{model_id}:{owner}:{digest}"


# Results outlive the request so an async-job client or a missed notice can still read them.
RESULT_TTL_S = 3600
REPLY_STREAM_MAXLEN = 10_000
# Each owner's async jobs kept (answer and owner): past it, an owner's new job pushes out that
# owner's oldest, so one account queuing jobs without end fills neither memory nor Redis.
KEPT_JOBS_PER_OWNER = 1_000
DEAD_LETTER_MAXLEN = 1000
