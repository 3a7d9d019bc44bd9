"""Bringing what a person just asked for into view: on a phone, the answers to new images and
History's feedback form came a screen or more below where they were asked for, without a sign.
"""

from __future__ import annotations

import streamlit as st

# Scrolls the element of a Streamlit key (its ``st-key-...`` class) to the top of the window
# when it starts below the window's middle. TOKEN makes each such script a new element, so that
# the browser runs it again.
_SCRIPT = """<script>
/* TOKEN */
(() => {
  const target = document.querySelector(".st-key-KEY");
  if (target && target.getBoundingClientRect().top > window.innerHeight / 2) {
    target.scrollIntoView({behavior: "smooth", block: "start"});
  }
})();
</script>"""


def bring_into_view(key: str, token: str) -> None:
    """Once per ``token``: scroll to the element with this key if it is below the middle."""
    script = _SCRIPT.replace("KEY", key).replace("TOKEN", token)
    st.html(script, unsafe_allow_javascript=True)
