"""Small helpers for what the page shows: text and previews."""

from __future__ import annotations

import io
import re

from PIL import Image

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def escape_markdown(text: str) -> str:
    """``text`` shown as itself inside ``st.markdown``: a user's name or a file name stays text,
    never a link or an image."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def percent(score: float) -> str:
    return f"{score:.1%}"


def previewable(data: bytes) -> bool:
    """Whether a browser preview of these bytes can be made; a file the API will refuse (not
    an image, truncated) gets no preview rather than an error from ``st.image``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:  # Pillow raises many kinds of errors on bad input; all mean "no".
        return False
    return True
