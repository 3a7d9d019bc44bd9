"""A stranger who opens the page, without logging in, cannot make the real UI server hold
uploads: Streamlit's own upload route takes any file id for any live session, 19 MB a time
(the server grew 57 MB for every three such uploads, and kept it)."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from imgclf.settings import Settings
from imgclf.ui.login_cookie import COOKIE
from imgclf.ui.upload_guard import BUDGET_IN_LARGEST_UPLOADS
from tests.ui.conftest import BODY_PAUSE_S, Account, Stack

UPLOADS = 6
UPLOAD_BYTES = 19 * 2**20


async def anonymous_session(
    ui: str, xsrf: str, login_cookie: str = ""
) -> tuple[websockets.ClientConnection, str]:
    """A page opened as a browser opens it (a websocket, a first run), not logged in unless
    ``login_cookie`` (a refresh token, as the cookie route keeps it); returned once that first
    run has finished, so that what it imports and builds is not counted."""
    cookies = f"_streamlit_xsrf={xsrf}" + (f"; {COOKIE}={login_cookie}" if login_cookie else "")
    socket = await websockets.connect(
        f"ws://{ui}/_stcore/stream",
        subprotocols=[websockets.Subprotocol("streamlit"), websockets.Subprotocol(xsrf)],
        additional_headers={"Cookie": cookies},
        origin=websockets.Origin(f"http://{ui}"),
        max_size=None,
    )
    rerun = BackMsg()
    rerun.rerun_script.query_string = ""
    await socket.send(rerun.SerializeToString())
    session_id = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = ForwardMsg()
        message.ParseFromString(await asyncio.wait_for(socket.recv(), 60))
        kind = message.WhichOneof("type")
        if kind == "new_session":
            session_id = message.new_session.initialize.session_id
        elif kind == "script_finished" and session_id is not None:
            return socket, session_id
    raise AssertionError("the page did not finish its first run")


def ui_server_rss(stack: Stack) -> int:
    """The resident memory of the Streamlit process under ``imgclf up``."""
    children = psutil.Process(stack.up.pid).children(recursive=True)
    (streamlit,) = [p for p in children if "page_server" in " ".join(p.cmdline())]
    return int(streamlit.memory_info().rss)


def test_a_page_without_a_login_cannot_upload(stack: Stack) -> None:
    stack.wait_for(stack.ui_port, "the UI")
    ui = f"127.0.0.1:{stack.ui_port}"

    async def attack() -> tuple[list[httpx.Response], int]:
        async with httpx.AsyncClient(base_url=f"http://{ui}", timeout=30) as client:
            await client.get("/_stcore/health")
            xsrf = client.cookies["_streamlit_xsrf"]
            socket, session_id = await anonymous_session(ui, xsrf)
            blob = os.urandom(UPLOAD_BYTES)

            async def upload(n: int) -> httpx.Response:
                return await client.put(
                    f"/_stcore/upload_file/{session_id}/made-up-{n}",
                    files={"file": ("x.png", blob, "image/png")},
                    headers={"X-Xsrftoken": xsrf},
                )

            try:
                # One upload first, so that the buffers any request's body passes through are
                # counted before the measure starts: only what is held is measured.
                await upload(-1)
                before = ui_server_rss(stack)
                answers = [await upload(n) for n in range(UPLOADS)]
                return answers, ui_server_rss(stack) - before
            finally:
                await socket.close()

    answers, grown = asyncio.run(attack())

    assert [answer.status_code for answer in answers] == [401] * UPLOADS
    assert answers[0].json() == {"detail": "Log in to upload images."}
    assert grown < UPLOAD_BYTES  # before: about 3 x 19 MB for every 3 uploads, kept


def test_streamlits_own_figures_are_shown_to_nobody(stack: Stack) -> None:
    """``/_stcore/metrics`` told anyone how many pages were open and how many bytes of
    uploads the server held."""
    stack.wait_for(stack.ui_port, "the UI")
    ui = f"http://127.0.0.1:{stack.ui_port}"
    for path in ("/_stcore/metrics", "/_stcore/metrics/", "//_stcore//metrics"):
        answer = httpx.get(f"{ui}{path}", headers={"Accept": "application/openmetrics-text"})
        assert answer.status_code == 404, (path, answer.text[:200])
        assert "session" not in answer.text
    assert httpx.get(f"{ui}/_stcore/health").status_code == 200


def test_uploads_that_send_nothing_are_cut_off_and_give_their_room_back(
    stack: Stack, account: Account
) -> None:
    """Their declared bytes count in the budget while they arrive, and Streamlit reads a body
    with no timeout: uploads from a logged-in page that declared the whole budget and sent
    nothing kept every other page's uploads refused for as long as their connections stayed
    open. (Before the uploads of the next test, which Streamlit holds for a while.)"""
    stack.wait_for(stack.ui_port, "the UI")
    ui = f"127.0.0.1:{stack.ui_port}"
    login = {"username": account.email, "password": account.password, "scope": "offline_access"}
    refresh = httpx.post(f"{stack.api_url}/login", data=login).json()["refresh_token"]
    silent_count = BUDGET_IN_LARGEST_UPLOADS  # each declaring the largest upload
    declared = ui_upload_budget() // silent_count

    async def attack() -> tuple[int, list[bytes], float, int]:
        async with httpx.AsyncClient(base_url=f"http://{ui}", timeout=60) as client:
            await client.get("/_stcore/health")
            xsrf = client.cookies["_streamlit_xsrf"]
            socket, session_id = await anonymous_session(ui, xsrf, refresh)

            async def small_upload(name: str) -> int:
                answer = await client.put(
                    f"/_stcore/upload_file/{session_id}/{name}",
                    files={"file": ("x.png", b"\x89PNG not really", "image/png")},
                    headers={"X-Xsrftoken": xsrf},
                )
                return answer.status_code

            head = (
                f"PUT /_stcore/upload_file/{session_id}/silent HTTP/1.1\r\nHost: {ui}\r\n"
                f"Cookie: _streamlit_xsrf={xsrf}\r\nX-Xsrftoken: {xsrf}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            started = time.monotonic()
            silent = [
                await asyncio.open_connection("127.0.0.1", stack.ui_port)
                for _ in range(silent_count)
            ]
            try:
                for _, writer in silent:
                    writer.write(head)
                    await writer.drain()
                await asyncio.sleep(0.5)  # the guard has admitted them
                meanwhile = await small_upload("meanwhile")
                answers = [
                    await asyncio.wait_for(reader.readline(), 10 * BODY_PAUSE_S)
                    for reader, _ in silent
                ]
                waited = time.monotonic() - started
                return meanwhile, answers, waited, await small_upload("after")
            finally:
                for _, writer in silent:
                    writer.close()
                await socket.close()

    meanwhile, answers, waited, after = asyncio.run(attack())
    assert meanwhile == 503  # the budget is theirs while they are received
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers
    assert waited < 3 * BODY_PAUSE_S
    assert after == 204  # the room they held is given back


def ui_upload_budget() -> int:
    """The UI server's budget of uploads: eight of its largest (the API's upload limit)."""
    largest_mb = -(-Settings.model_fields["max_upload_bytes"].default // 2**20)
    return BUDGET_IN_LARGEST_UPLOADS * largest_mb * 2**20


def test_uploads_sent_together_stay_within_the_budget(stack: Stack, account: Account) -> None:
    """The budget was checked against what Streamlit held, which counts a file once it is
    whole: 24 uploads of 19 MB sent at once from a logged-in page all passed (456 MB held
    against 160). Now the uploads being received count too."""
    stack.wait_for(stack.ui_port, "the UI")
    ui = f"127.0.0.1:{stack.ui_port}"
    login = {"username": account.email, "password": account.password, "scope": "offline_access"}
    refresh = httpx.post(f"{stack.api_url}/login", data=login).json()["refresh_token"]
    together = BUDGET_IN_LARGEST_UPLOADS + 4

    async def attack() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=f"http://{ui}", timeout=60) as client:
            await client.get("/_stcore/health")
            xsrf = client.cookies["_streamlit_xsrf"]
            socket, session_id = await anonymous_session(ui, xsrf, refresh)
            blob = os.urandom(UPLOAD_BYTES)

            async def upload(n: int) -> httpx.Response:
                return await client.put(
                    f"/_stcore/upload_file/{session_id}/together-{n}",
                    files={"file": ("x.png", blob, "image/png")},
                    headers={"X-Xsrftoken": xsrf},
                )

            try:
                return await asyncio.gather(*(upload(n) for n in range(together)))
            finally:
                await socket.close()

    statuses = sorted(answer.status_code for answer in asyncio.run(attack()))
    assert statuses.count(204) <= BUDGET_IN_LARGEST_UPLOADS, statuses
    assert statuses.count(503) >= together - BUDGET_IN_LARGEST_UPLOADS, statuses
    assert set(statuses) <= {204, 503}, statuses
