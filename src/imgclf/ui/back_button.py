"""The browser's Back and Forward between the page's tabs (Classify, History, Admin; Log in and
Sign up). Streamlit's tabs change no URL and add no history entry, so Back left the app for
the page before it. A click on another tab adds an entry (same URL) that names the tab, and
going back or forward to an entry selects its tab again. The entry's address names the tab
(``?view=History``; the first tab goes without), so that a reload opens it again
(``imgclf.ui.app``)."""

from __future__ import annotations

import streamlit as st

_SCRIPT = """<script>
if (!window.imgclfTabHistory) {
  window.imgclfTabHistory = true;
  let returning = false;
  const tabs = () => [...document.querySelectorAll('[role="tab"]')];
  const nameOf = (tab) => tab.textContent.trim();
  const selected = () => tabs().find((tab) => tab.getAttribute("aria-selected") === "true");
  const addressOf = (tab) => {
    const url = new URL(window.location.href);
    if (tab === tabs()[0]) url.searchParams.delete("view");
    else url.searchParams.set("view", nameOf(tab));
    return url.pathname + url.search + url.hash;
  };
  // On pointerdown, before the tabs act: by the click the other tab is already selected.
  document.addEventListener("pointerdown", (event) => {
    const tab = event.target.closest('[role="tab"]');
    const current = selected();
    if (returning || !tab || !current || tab === current) return;
    if (!(history.state && history.state.imgclfTab)) {
      history.replaceState({...(history.state || {}), imgclfTab: nameOf(current)}, "",
                           addressOf(current));
    }
    history.pushState({imgclfTab: nameOf(tab)}, "", addressOf(tab));
  }, true);
  window.addEventListener("popstate", (event) => {
    const name = event.state && event.state.imgclfTab;
    const tab = name && tabs().find((candidate) => nameOf(candidate) === name);
    if (!tab || tab === selected()) return;
    returning = true;
    tab.click();
    returning = false;
  });
}
</script>"""


def follow_tabs_in_history() -> None:
    """Once per page: Back and Forward go between the tabs a person opened."""
    st.html(_SCRIPT, unsafe_allow_javascript=True)
