"""A Redis worker's model versions kept in line with the live and wanted ones Redis holds.

Each heartbeat reads them; a version being promoted is loaded and warmed in a thread of its own
(the heartbeats go on meanwhile), then announced, so that the promotion can flip the live
version once every worker serving the model holds it. Versions no longer live are dropped once
no admitted job can need them (:class:`LoadedModels` counts that time).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis.exceptions import RedisError

from imgclf.queue.redis_source import RedisJobSource
from imgclf.worker.models import LoadedModels

logger = logging.getLogger(__name__)


class VersionKeeper:
    def __init__(
        self,
        source: RedisJobSource,
        models: LoadedModels,
        names: list[str],
        *,
        heartbeat_ttl_s: float,
    ) -> None:
        self.source = source
        self.models = models
        self.names = names
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self._loading: threading.Thread | None = None

    def report(self) -> dict[str, Any]:
        """What the heartbeat says: the models served, the versions held, and every bundle of
        the repository here (an API without the repository learns from this which models
        exist, served or not)."""
        catalogue = self.models.catalogue
        return {
            "serves": self.names,
            "loaded": self.models.loaded,
            "versions": [
                {
                    "name": entry.name,
                    "version": entry.version,
                    "input_size": entry.input_size,
                    "precision": entry.precision,
                    "top1_published": entry.top1_published,
                }
                for versions in catalogue.models.values()
                for entry in versions.values()
            ],
        }

    def wanted(self) -> set[str]:
        self.models.refresh_catalogue()  # versions copied in since are announced too
        live, wanted = self.source.model_versions()
        for name in self.names:
            if name not in live:
                self.source.claim_live(name, self.models.catalogue.newest(name))
        if any(name not in live for name in self.names):
            live, wanted = self.source.model_versions()
        refs = {f"{name}@{live[name]}" for name in self.names if name in live}
        return refs | {f"{name}@{wanted[name]}" for name in self.names if name in wanted}

    def tick(self, *, wait: bool = False) -> None:
        """Start bringing the loaded versions in line (``wait``: and finish, at start-up)."""
        if self._loading is not None and self._loading.is_alive():
            return
        try:
            wanted = self.wanted()
        except (RedisError, OSError) as error:  # Redis away: keep what is loaded, ask again
            logger.warning("cannot read the live model versions: %s", error)
            return
        self._loading = threading.Thread(
            target=self._keep, args=(wanted,), name="imgclf-versions", daemon=True
        )
        self._loading.start()
        if wait:
            self._loading.join()

    def _keep(self, wanted: set[str]) -> None:
        before = set(self.models.loaded)
        try:
            self.models.keep(wanted)
        except Exception:
            logger.exception("keeping the model versions %s failed", sorted(wanted))
        if set(self.models.loaded) - before:
            # The heartbeat first: a promotion woken by the notice reads it.
            self.source.heartbeat(self.heartbeat_ttl_s, self.report())
            self.source.announce_loaded(self.models.loaded)
