"""Logging in through the page spends the visitor's own login budget, not everyone's.

Visitors speak to the real Streamlit server (``imgclf up``) over its WebSocket, as a browser
does, each from an address a proxy on this host names (Streamlit, like uvicorn, believes
X-Forwarded-For from loopback). The page passes that address on to the API, which ``imgclf up``
tells to believe its UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import websocket
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

from tests.ui.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account, Stack

FINISHED_EARLY_FOR_RERUN = ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN


@dataclass
class Visitor:
    """One browser tab on the page: each ``log_in`` is a submit of the login form."""

    connection: websocket.WebSocket
    widgets: dict[str, str] = field(default_factory=dict)  # key -> id ("$$ID-<hash>-<key>")

    def run(self, states: list[WidgetState]) -> list[str]:
        """Rerun the page with these widget states; what it says (Markdown and alerts)."""
        message = BackMsg()
        message.rerun_script.widget_states.widgets.extend(states)
        self.connection.send_binary(message.SerializeToString())
        said: list[str] = []
        while True:
            forward = ForwardMsg.FromString(self.connection.recv())
            kind = forward.WhichOneof("type")
            if kind == "delta" and forward.delta.WhichOneof("type") == "new_element":
                element = forward.delta.new_element
                which = element.WhichOneof("type")
                if which in {"text_input", "button"}:
                    widget = getattr(element, which)
                    self.widgets[widget.id.split("-", 2)[2]] = widget.id
                elif which == "alert":
                    said.append(element.alert.body)
                elif which == "markdown":
                    said.append(element.markdown.body)
            elif kind == "script_finished" and forward.script_finished != FINISHED_EARLY_FOR_RERUN:
                return said

    def log_in(self, email: str, password: str) -> list[str]:
        return self.run(
            [
                WidgetState(id=self.widgets["login-email"], string_value=email),
                WidgetState(id=self.widgets["login-password"], string_value=password),
                WidgetState(id=self.widgets["FormSubmitter:login-Log in"], trigger_value=True),
            ]
        )


@pytest.fixture
def visit(stack: Stack) -> Iterator[type[Visitor]]:
    stack.wait_for(stack.ui_port, "the UI")
    connections: list[websocket.WebSocket] = []

    class Opened(Visitor):
        def __init__(self, address: str | None) -> None:
            headers = [f"X-Forwarded-For: {address}"] if address else []
            connection = websocket.create_connection(
                f"ws://127.0.0.1:{stack.ui_port}/_stcore/stream",
                subprotocols=["streamlit"],
                header=headers,
                timeout=60,
            )
            connections.append(connection)
            super().__init__(connection)
            self.run([])  # the first page: learn the login form's widget ids

    yield Opened
    for connection in connections:
        connection.close()


def test_failures_through_the_page_spend_only_that_visitors_budget(
    visit: type[Visitor], account: Account
) -> None:
    """Before: the API saw every visitor as the UI server, so 5 wrong passwords for an email,
    or 50 for anyone, through the page refused every visitor's right password for 15 minutes.
    Now they refuse that email to strangers only: its owner, where they logged in before,
    still logs in, and the attacker's failures refuse no other email to anyone."""
    email, password = account.user.email, account.password
    signed_in = "Signed in as **UI Tester**"
    assert signed_in in visit("198.51.100.7").log_in(email, password)
    assert signed_in in visit(None).log_in(email, password)  # a browser on the UI's own host

    attacker = visit("203.0.113.66")
    for number in range(5):
        assert "Incorrect email or password" in attacker.log_in(email, f"guess {number}")
    for number in range(45):
        said = attacker.log_in(f"someone{number}@example.com", "guess")
        assert "Incorrect email or password" in said
    spent = "Too many failed logins; try again in 15 minutes"
    assert spent in attacker.log_in(email, password)
    assert spent in visit("192.0.2.44").log_in(email, password)  # a stranger to the account

    assert signed_in in visit("198.51.100.7").log_in(email, password)
    assert signed_in in visit(None).log_in(email, password)
    assert "Signed in as **Admin**" in visit("192.0.2.44").log_in(ADMIN_EMAIL, ADMIN_PASSWORD)
