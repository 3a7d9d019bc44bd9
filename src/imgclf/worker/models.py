"""The model versions a worker holds: loaded and warmed beside each other, dropped when unneeded.

A job names the version it was admitted for (``name@version``) and is computed by exactly that
one. A version stops being wanted when another is promoted; it is dropped ``grace_s`` after it
was last wanted or used, the longest a job admitted for it can still be waiting (its deadline),
so no admitted job ever finds its version gone. Should one come all the same, its version is
loaded again for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from imgclf.model.bundle import BundleError, load_bundle
from imgclf.model.classifier import Classifier
from imgclf.model.repository import ModelCatalogue, read_catalogue
from imgclf.settings import Settings

logger = logging.getLogger(__name__)
# A version that failed to load is tried again after this long, not at every heartbeat.
RETRY_FAILED_LOAD_S = 60.0


class ModelSource(Protocol):
    def classifier_for(self, ref: str) -> Classifier:
        """The classifier of ``name@version``; raises BundleError when it cannot be loaded."""
        ...


def parse_ref(ref: str) -> tuple[str, int]:
    """``name@version`` -> (name, version); raises ValueError."""
    name, _, version = ref.rpartition("@")
    if not name or not version.isdigit():
        raise ValueError(f"not a model version: {ref!r}")
    return name, int(version)


class LoadedModels:
    """The versions this worker has loaded, by ``name@version``; safe to use from any thread."""

    def __init__(self, settings: Settings, *, single_thread_runs: bool, grace_s: float) -> None:
        self.settings = settings
        self.single_thread_runs = single_thread_runs
        self.grace_s = grace_s
        self.catalogue: ModelCatalogue = read_catalogue(settings)
        self._loaded: dict[str, Classifier] = {}
        self._kept_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._failed_at: dict[str, float] = {}

    def refresh_catalogue(self, keeps: Callable[[ModelCatalogue], bool] = lambda _: True) -> None:
        """Read the repository again (its bundle.json files only); keep the last good one, or
        the last one when the new one does not pass ``keeps``. A repository that cannot be
        read (OSError: its volume gone, its permissions changed) keeps the last one too."""
        try:
            catalogue = read_catalogue(self.settings)
        except (BundleError, OSError) as error:
            logger.warning("the model repository cannot be read: %s", error)
            return
        if keeps(catalogue):
            self.catalogue = catalogue

    def classifier_for(self, ref: str) -> Classifier:
        with self._lock:
            loaded = self._loaded.get(ref)
            if loaded is not None:
                # A version jobs still name (a shadow candidate, which is never live) is kept
                # as long as they do, not loaded again after every grace period.
                self._kept_until[ref] = max(
                    self._kept_until.get(ref, 0.0), time.monotonic() + self.grace_s
                )
        return loaded if loaded is not None else self.load(ref)

    def load(self, ref: str) -> Classifier:
        """Load and warm ``ref`` (once, however many threads ask at the same time)."""
        with self._lock:
            gate = self._loading.setdefault(ref, threading.Lock())
        with gate:
            with self._lock:
                if ref in self._loaded:
                    return self._loaded[ref]
            name, version = parse_ref(ref)
            entry = self.catalogue.find(name, version)
            if entry is None:  # a version added to the repository since the last look
                self.refresh_catalogue()
                entry = self.catalogue.find(name, version)
            if entry is None:
                raise BundleError(f"{ref} is not in the model repository.")
            started = time.perf_counter()
            classifier = Classifier(
                load_bundle(entry.path),
                threads=self.settings.resolved_model_threads,
                spinning=self.settings.model_spinning,
                single_thread_runs=self.single_thread_runs,
            )
            with self._lock:
                self._loaded[ref] = classifier
                self._kept_until[ref] = time.monotonic() + self.grace_s
            logger.info("loaded %s in %.1f s", ref, time.perf_counter() - started)
            return classifier

    def keep(self, wanted: set[str]) -> None:
        """Load what is wanted; drop what has not been wanted for ``grace_s``. A version that
        cannot be loaded is logged and left out: the others are served all the same."""
        for ref in sorted(wanted - set(self.loaded)):
            if (
                time.monotonic() - self._failed_at.get(ref, -RETRY_FAILED_LOAD_S)
                < RETRY_FAILED_LOAD_S
            ):
                continue
            try:
                self.load(ref)
            except (BundleError, ValueError) as error:
                self._failed_at[ref] = time.monotonic()
                logger.error("cannot load %s: %s", ref, error)
        now = time.monotonic()
        with self._lock:
            for ref in wanted:
                self._kept_until[ref] = now + self.grace_s
            gone = [ref for ref in self._loaded if self._kept_until.get(ref, 0) < now]
            for ref in gone:
                del self._loaded[ref]
                self._kept_until.pop(ref, None)
        for ref in gone:
            logger.info("dropped %s: no job can need it any more", ref)

    @property
    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._loaded)
