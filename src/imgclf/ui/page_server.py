"""``streamlit run``, served by the API's HTTP protocol (``imgclf.http_protocol``).

Streamlit builds its uvicorn server itself and offers no option for the protocol, so the UI
server read request heads without a size or time cap: three connections sending 100 MB of
headers each held 400 MB of its memory and slowed every page to 15 s. uvicorn resolves its
default protocol by name from ``HTTP_PROTOCOLS`` when the server starts; naming ours there
first gives the UI the API's limits (431, 414, 408, a body left unread) without touching
Streamlit. ``imgclf ui`` runs this module in place of ``python -m streamlit``.
"""

from __future__ import annotations

import sys

from uvicorn import config


def main() -> None:
    config.HTTP_PROTOCOLS["auto"] = "imgclf.http_protocol:LimitedHttpToolsProtocol"
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    streamlit_main()


if __name__ == "__main__":
    main()
