"""The Classify tab's images, answers, model choice and unsent feedback, kept per user for the
UI process's lifetime, so that a reload or a second tab finds them (a tab's
``st.session_state`` ends with its websocket).

Bounded: the most recent users, and per user the most recent images up to a byte budget.
Logging out drops the user's shelf; a login that merely ended keeps it for the next log-in.
A logout also starts a new generation of the user's tabs: one still open from before learns on
its next run that it was logged out, and cannot put its images back (``put`` refuses them).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_USERS = 64
MAX_BYTES_PER_USER = 64 * 2**20
# Users whose logouts are remembered; past it the oldest is forgotten, and a tab of theirs
# open since then is logged out on its next run (a generation it cannot match).
MAX_GENERATIONS = 65_536
MAX_DRAFT_CHARS = 10_000


@dataclass
class Kept:
    images: dict[str, Any] = field(default_factory=dict)
    feedback_sent: dict[int, Any] = field(default_factory=dict)
    model: str | None = None  # the model the user last picked
    # The feedback forms' fields as they were left, by widget key: a reload fills them again.
    drafts: dict[str, Any] = field(default_factory=dict)


class Shelf:
    def __init__(self, max_users: int = MAX_USERS, max_bytes: int = MAX_BYTES_PER_USER) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[int, Kept] = OrderedDict()
        self._generations: OrderedDict[int, int] = OrderedDict()
        self._logouts = itertools.count(1)
        self._max_users = max_users
        self._max_bytes = max_bytes

    def generation(self, user_id: int) -> int:
        """Changes each time the user logs out: a tab compares it with the one it began in."""
        with self._lock:
            return self._generations.get(user_id, 0)

    def put(
        self,
        user_id: int,
        generation: int,
        images: dict[str, Any],
        feedback_sent: dict[int, Any],
        model: str | None = None,
        drafts: dict[str, Any] | None = None,
    ) -> None:
        """Keep copies; ``images`` values have ``upload.data``, counted against the budget.
        Nothing is kept from a tab of a generation the user has since logged out of."""
        kept: dict[str, Any] = {}
        budget = self._max_bytes
        for digest, result in reversed(list(images.items())):  # the newest first
            budget -= len(result.upload.data)
            if budget < 0:
                break
            kept[digest] = result
        with self._lock:
            if generation != self._generations.get(user_id, 0):
                return
            self._kept[user_id] = Kept(
                dict(reversed(list(kept.items()))), dict(feedback_sent), model, _short(drafts)
            )
            self._kept.move_to_end(user_id)
            while len(self._kept) > self._max_users:
                self._kept.popitem(last=False)

    def get(self, user_id: int) -> Kept | None:
        with self._lock:
            kept = self._kept.get(user_id)
            if kept is None:
                return None
            return Kept(dict(kept.images), dict(kept.feedback_sent), kept.model, dict(kept.drafts))

    def drop(self, user_id: int) -> None:
        """The user logged out: their images go, and their open tabs' generation ends."""
        with self._lock:
            self._kept.pop(user_id, None)
            self._generations[user_id] = next(self._logouts)
            self._generations.move_to_end(user_id)
            while len(self._generations) > MAX_GENERATIONS:
                self._generations.popitem(last=False)


def _short(drafts: dict[str, Any] | None) -> dict[str, Any]:
    """The drafts a shelf keeps: a note pasted by the megabyte is the tab's alone."""
    return {
        key: value
        for key, value in (drafts or {}).items()
        if not isinstance(value, str) or len(value) <= MAX_DRAFT_CHARS
    }


# One per UI process, shared by every tab's script run.
SHELF = Shelf()
