"""The Classify tab's images and answers, kept per user for the UI process's lifetime, so that
a reload or a second tab finds them (a tab's ``st.session_state`` ends with its websocket).

Bounded: the most recent users, and per user the most recent images up to a byte budget.
Logging out drops the user's shelf; a login that merely ended keeps it for the next log-in.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_USERS = 64
MAX_BYTES_PER_USER = 64 * 2**20


@dataclass
class Kept:
    images: dict[str, Any] = field(default_factory=dict)
    feedback_sent: dict[int, Any] = field(default_factory=dict)


class Shelf:
    def __init__(self, max_users: int = MAX_USERS, max_bytes: int = MAX_BYTES_PER_USER) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[int, Kept] = OrderedDict()
        self._max_users = max_users
        self._max_bytes = max_bytes

    def put(self, user_id: int, images: dict[str, Any], feedback_sent: dict[int, Any]) -> None:
        """Keep copies; ``images`` values have ``upload.data``, counted against the budget."""
        kept: dict[str, Any] = {}
        budget = self._max_bytes
        for digest, result in reversed(list(images.items())):  # the newest first
            budget -= len(result.upload.data)
            if budget < 0:
                break
            kept[digest] = result
        with self._lock:
            self._kept[user_id] = Kept(dict(reversed(list(kept.items()))), dict(feedback_sent))
            self._kept.move_to_end(user_id)
            while len(self._kept) > self._max_users:
                self._kept.popitem(last=False)

    def get(self, user_id: int) -> Kept | None:
        with self._lock:
            kept = self._kept.get(user_id)
            return Kept(dict(kept.images), dict(kept.feedback_sent)) if kept else None

    def drop(self, user_id: int) -> None:
        with self._lock:
            self._kept.pop(user_id, None)


# One per UI process, shared by every tab's script run.
SHELF = Shelf()
