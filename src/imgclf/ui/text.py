"""Small helpers for what the page says."""

from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def escape_markdown(text: str) -> str:
    """``text`` shown as itself inside ``st.markdown``: a user's name or a file name stays text,
    never a link or an image."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def percent(score: float) -> str:
    return f"{score:.1%}"
