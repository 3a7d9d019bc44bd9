"""What the API knows about the models the workers serve: which exist, which version is live,
who serves them; and the refusals that come of it."""

from __future__ import annotations

from dataclasses import dataclass, field


class ModelError(Exception):
    """A request named a model (or version) the service cannot use."""


class UnknownModelError(ModelError):
    """No such model, or no such version of it, in the repository (404)."""

    def __init__(self, wanted: str, available: list[str]) -> None:
        listed = ", ".join(available) or "none"
        super().__init__(f"Unknown model '{wanted}'; available: {listed}")


class ModelUnavailableError(ModelError):
    """The model exists but no worker serves it now (503)."""

    def __init__(self, name: str, serving: list[str]) -> None:
        listed = ", ".join(serving) or "none"
        super().__init__(
            f"The model '{name}' is unavailable: no worker serves it now; "
            f"models being served: {listed}"
        )


class PromotionError(ModelError):
    """The workers did not load the version in time: the live version did not change (503)."""


@dataclass(slots=True)
class ModelStatus:
    """One model as ``GET /models`` shows it."""

    name: str
    live_version: int
    versions: list[int]
    input_size: int
    precision: str
    accuracy: float | None
    default: bool
    workers: int = 0
    queue_depth: int = 0
    loaded: list[str] = field(default_factory=list)

    @property
    def live(self) -> str:
        return f"{self.name}@{self.live_version}"
