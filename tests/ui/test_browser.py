"""One walk through the page in a real browser (Debian's chromium, driven by Playwright):
log in as the admin, upload the dog, classify, send feedback, find it in History.

It saves the screenshots the README shows (docs/img/ui-login.png, docs/img/ui-classify.png),
so each run that passes refreshes them. Playwright never downloads a browser here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error, FloatRect, Page, Route, expect, sync_playwright

from tests.conftest import DOG_JPEG, unavailable
from tests.ui.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "img"
TIMEOUT_MS = 30_000
LOGIN_CLIP = FloatRect(x=0, y=0, width=900, height=640)


@pytest.fixture(scope="module")
def ui_url(stack: Stack) -> str:
    """The UI that ``imgclf up`` started after its API was ready."""
    stack.wait_for(stack.ui_port, "the UI")
    return f"http://127.0.0.1:{stack.ui_port}"


@pytest.fixture
def page(ui_url: str) -> Iterator[Page]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # Tall enough that the result card, chart and feedback form fit in one picture.
            page = browser.new_page(viewport={"width": 900, "height": 1180})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def test_log_in_classify_send_feedback_and_find_it_in_history(page: Page, ui_url: str) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(ui_url)
    expect(page.get_by_role("tab", name="Log in")).to_be_visible()
    page.locator(".st-key-login-email input").fill(ADMIN_EMAIL)
    page.locator(".st-key-login-password input").fill(ADMIN_PASSWORD)
    page.locator(".st-key-login-password input").blur()
    page.screenshot(path=SCREENSHOTS / "ui-login.png", clip=LOGIN_CLIP)
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_text("Signed in as")).to_be_visible()
    page.locator('input[type="file"]').set_input_files(DOG_JPEG)
    page.locator(".st-key-classify button").click()
    expect(page.get_by_role("heading", name="Eskimo dog")).to_be_visible()
    expect(page.get_by_text("62.2% sure")).to_be_visible()
    expect(page.locator("[data-testid=stVegaLiteChart]")).to_be_visible()
    settle(page)
    page.mouse.move(0, 0)  # no hover effect on the Classify button in the picture
    page.wait_for_timeout(500)  # let the chart finish drawing
    page.screenshot(path=SCREENSHOTS / "ui-classify.png")

    page.get_by_text("No", exact=True).click()
    choose_class(page, "Siberian husky")
    page.locator("[class*=st-key-fb-][class*=-comment] textarea").fill("Blue eyes.")
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Thank you! Your feedback was saved.")).to_be_visible()

    page.get_by_role("tab", name="History").click()
    said = "Wrong. Right class: Siberian_husky. Blue eyes."
    expect(page.get_by_role("cell", name=said).first).to_be_visible()


def settle(page: Page) -> None:
    """Wait until Streamlit has finished rerunning the script (its own end-to-end tests'
    marker), so that the next click lands on elements the rerun will not replace."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def choose_class(page: Page, name: str) -> None:
    """Pick ``name`` in the "What is it?" select by typing part of it, as a person would."""
    select = page.locator("[class*=st-key-fb-][class*=-class]")
    option = page.get_by_role("option", name=name, exact=True)
    for _attempt in range(3):
        select.wait_for()
        settle(page)
        select.click()
        page.keyboard.type(name.split()[-1])
        try:
            option.click(timeout=5_000)
        except Error:  # the list closed under us; open it again
            page.keyboard.press("Escape")
            continue
        if select.get_by_role("combobox").input_value() == name:
            return
    pytest.fail(f"could not choose {name!r} in the class select")


def test_the_api_docs_render_with_the_network_cut_off(page: Page, stack: Stack) -> None:
    """/docs as a person opens it on a machine without internet: every request that leaves
    loopback is aborted, Swagger UI still draws the operations and ReDoc its page, and neither
    asks another site for a script, a style, a font or data."""
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            if route.request.resource_type != "image":  # ReDoc's footer logo may stay blank
                outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(f"{stack.api_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("imgclf")
    expect(page.get_by_text("Classify an image")).to_be_visible()
    page.goto(f"{stack.api_url}/redoc")
    expect(page.get_by_role("heading", name="imgclf")).to_be_visible()
    assert outside == []
