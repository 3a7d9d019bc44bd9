"""The routes beside the page that keep the login in an HttpOnly cookie: a one-time code in,
a cookie out; only the page's own script may call them."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from imgclf.ui.login_cookie import COOKIE, FORGET_PATH, HANDOFF, KEEP_PATH, ROUTES, Handoff

FROM_PAGE = {"X-Requested-By": "imgclf", "Sec-Fetch-Site": "same-origin"}


def client() -> TestClient:
    return TestClient(Starlette(routes=ROUTES), base_url="https://ui.example")


def test_a_code_sets_an_httponly_strict_cookie_once() -> None:
    code = HANDOFF.put("refresh-token-value", 3600)
    answer = client().post(KEEP_PATH, json={"code": code}, headers=FROM_PAGE)
    assert answer.status_code == 204
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=refresh-token-value;")
    for attribute in ("HttpOnly", "Max-Age=3600", "Path=/", "SameSite=strict", "Secure"):
        assert attribute in cookie
    again = client().post(KEEP_PATH, json={"code": code}, headers=FROM_PAGE)
    assert again.status_code == 404
    assert again.json() == {"detail": "Unknown or expired code"}


def test_only_the_pages_own_script_may_call() -> None:
    code = HANDOFF.put("refresh-token-value", None)
    for headers in ({}, {**FROM_PAGE, "Sec-Fetch-Site": "cross-site"}):
        refused = client().post(KEEP_PATH, json={"code": code}, headers=headers)
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
        assert client().post(FORGET_PATH, headers=headers).status_code == 403
    assert HANDOFF.waiting(code)  # not spent by the refusals


def test_forgetting_clears_the_cookie() -> None:
    answer = client().post(FORGET_PATH, headers=FROM_PAGE)
    assert answer.status_code == 204
    assert answer.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert "Max-Age=0" in answer.headers["set-cookie"]


def test_codes_expire() -> None:
    handoff = Handoff(ttl_s=0.0)
    code = handoff.put("refresh-token-value", None)
    assert handoff.take(code) is None
