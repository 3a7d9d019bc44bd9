"""``imgclf ui``: run the Streamlit page as a child process pointed at the API."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from imgclf.settings import Settings

APP_PATH = Path(__file__).with_name("app.py")
# The page and the login cookie's routes beside it.
SERVER_PATH = Path(__file__).with_name("server.py")
MAX_MESSAGE_MB = 2


def streamlit_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "imgclf.ui.page_server",
        "run",
        str(SERVER_PATH),
        "--server.address",
        settings.host,
        "--server.port",
        str(settings.ui_port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" button or developer menu: the people using the page are not its authors.
        "--client.toolbarMode",
        "minimal",
        # A failure shows a short message, never a traceback with the server's paths (the
        # traceback goes to the log).
        "--client.showErrorDetails",
        "none",
        # No watching of the source files: a served page has no author editing it, and a change
        # under a running server (a deploy, a pull) made Streamlit import the changed modules
        # afresh for the next runs, beside objects of the old ones still held by open pages.
        "--server.fileWatcherType",
        "none",
        # The uploader refuses what the API would (Streamlit counts whole megabytes).
        "--server.maxUploadSize",
        str(max(1, math.ceil(settings.max_upload_bytes / 2**20))),
        # The largest websocket message either way, in MB (files go over HTTP). Streamlit's
        # 200 let anyone hold 200 MB of the server per connection with a message sent in
        # pieces and never finished; the page's own are under 0.2 MB.
        "--server.maxMessageSize",
        str(MAX_MESSAGE_MB),
    ]


def run_ui(settings: Settings) -> int:
    """Run the UI until it stops; its exit code. SIGTERM is passed on to Streamlit, so a
    supervisor that stops ``imgclf ui`` does not leave the page server behind."""
    env = {**os.environ, "IMGCLF_API_URL": settings.api_url}
    if settings.trusted_proxies:
        # Streamlit's uvicorn believes X-Forwarded-For from loopback only (uvicorn's default):
        # behind a proxy elsewhere every page would have the proxy's address, and share its
        # page limit (imgclf.ui.server.LimitPages). An operator's own value wins.
        env.setdefault("FORWARDED_ALLOW_IPS", ",".join(settings.trusted_proxies))
    print(f"UI: http://{settings.host}:{settings.ui_port}  (API: {settings.api_url})", flush=True)
    process = subprocess.Popen(streamlit_command(settings), env=env)
    previous = None
    if threading.current_thread() is threading.main_thread():

        def forward(signum: int, _frame: FrameType | None) -> None:
            process.send_signal(signum)

        previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached Streamlit too (same process group); let it finish stopping.
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
