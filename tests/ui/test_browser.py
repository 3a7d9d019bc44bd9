"""The page in a real browser (Debian's chromium, driven by Playwright), at desktop and phone
width, against ``imgclf up`` with access tokens that live 4 seconds (see ``conftest``):

- files of every kind: a truncated JPEG, a text file named .jpg, a BMP, a 1x1 PNG and a 60 MP
  image each get an answer or an error card, never a traceback; an unchanged file added again
  is not classified again; a pasted image is classified; several images make a grid with a
  CSV download; Clear all;
- the login page: messages under the fields, a lock-out in minutes, no internal address;
- a login that survives a reload and a second tab, renews while used, and when it ends (a
  logout in the other tab, then the access token runs out) keeps the feedback being written
  and sends it after the next log-in; History shows it, and takes feedback from any row;
- the model picker (the card names the model picked) and the Admin tab, for the admin only,
  with its quality chart drawn from known feedback.

It saves the screenshots the README shows (docs/img/ui-*.png), so each run that passes
refreshes them. Playwright never downloads a browser here.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Error,
    FloatRect,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)
from playwright.sync_api import (
    TimeoutError as PlaywrightTimeoutError,
)

from imgclf.ui.classify_view import sample
from imgclf.ui.client import ApiError
from imgclf.ui.preview import DAMAGED, NOT_AN_IMAGE
from imgclf.ui.session import LOGGED_OUT_KEPT_NOTICE
from tests.conftest import DOG_JPEG, unavailable
from tests.security.hostile_files import flat_png
from tests.ui.conftest import (
    ACCESS_TOKEN_SECONDS,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    Account,
    Stack,
)
from tests.ui.test_admin_view import give_feedback
from tests.ui_api import ApiForTests

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
# Desktop: tall enough that a result card, its chart and the feedback form fit in one picture.
VIEWPORTS = {"desktop": {"width": 900, "height": 1180}, "phone": {"width": 390, "height": 844}}
LOGIN_CLIP = FloatRect(x=0, y=0, width=900, height=640)


@pytest.fixture(scope="module")
def ui_url(stack: Stack) -> str:
    """The UI that ``imgclf up`` started after its API was ready."""
    stack.wait_for(stack.ui_port, "the UI")
    return f"http://127.0.0.1:{stack.ui_port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(params=list(VIEWPORTS))
def width(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def context(browser: Browser, width: str) -> Iterator[BrowserContext]:
    """One browser profile (its tabs share cookies), in the visitor's own time zone."""
    context = browser.new_context(
        viewport=VIEWPORTS[width],  # type: ignore[arg-type]
        timezone_id="Europe/Paris",
        accept_downloads=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def settle(page: Page) -> None:
    """Wait until Streamlit has finished rerunning the script (its own end-to-end tests'
    marker), so that the next click lands on elements the rerun will not replace."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    page.locator(".st-key-login-email input").fill(email)
    page.locator(".st-key-login-password input").fill(password)
    page.get_by_role("button", name="Log in").click()


def logged_in(page: Page, ui_url: str, account: Account) -> Page:
    page.goto(ui_url)
    log_in(page, account.email)
    expect(page.get_by_text("Signed in as")).to_be_visible()
    return page


def add_files(page: Page, files: Any, shown: Locator, wait_ms: int = 20_000) -> None:
    """Give the uploader ``files`` and wait for ``shown``. Files given while the page still
    reruns after the last click (settle() may look before that rerun starts) can be lost with
    the input that took them: they are given again then, at most twice; a repeat of a file
    that did arrive is only "already here"."""
    for _attempt in range(3):
        settle(page)
        page.locator('input[type="file"]').set_input_files(files)
        try:
            shown.first.wait_for(timeout=wait_ms)
            return
        except PlaywrightTimeoutError:
            continue
    expect(shown.first).to_be_visible()


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def paste(page: Page, data: bytes, mime_type: str) -> None:
    """What the browser does on Ctrl+V with an image on the clipboard."""
    page.evaluate(
        """([b64, type]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const clipboard = new DataTransfer();
            clipboard.items.add(new File([bytes], "image.png", {type}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: clipboard}));
        }""",
        [base64.b64encode(data).decode(), mime_type],
    )


def drop(page: Page, name: str, data: bytes, large_bytes: int) -> None:
    """What the browser does when a file ``name`` and one of ``large_bytes`` (big.jpg) are
    dragged onto the uploader together."""
    page.locator("[data-testid=stFileUploaderDropzone]").evaluate(
        """(zone, [name, b64, size]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dragged = new DataTransfer();
            dragged.items.add(new File([bytes], name, {type: "image/jpeg"}));
            dragged.items.add(new File([new Uint8Array(size)], "big.jpg", {type: "image/jpeg"}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dragged, bubbles: true}));
        }""",
        [name, base64.b64encode(data).decode(), large_bytes],
    )


def no_traceback(page: Page) -> None:
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_files_of_every_kind_get_an_answer_or_an_error_card(
    page: Page, ui_url: str, account: Account, width: str
) -> None:
    logged_in(page, ui_url, account)
    dog = DOG_JPEG.read_bytes()
    files = [
        {"name": "truncated.jpg", "mimeType": "image/jpeg", "buffer": dog[: len(dog) // 2]},
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"Shopping list: milk.\n" * 9},
        {
            "name": "dog.bmp",
            "mimeType": "image/bmp",
            "buffer": encoded(Image.open(DOG_JPEG), "BMP"),
        },
        {
            "name": "red.png",
            "mimeType": "image/png",
            "buffer": encoded(Image.new("RGB", (1, 1), "red"), "PNG"),
        },
        {"name": "60mp.png", "mimeType": "image/png", "buffer": flat_png(7746, 7746, 8, 2, 3)},
    ]
    add_files(page, files, page.get_by_text("5 images: 2 answered, 3 refused"), wait_ms=40_000)
    settle(page)
    no_traceback(page)
    expect(page.get_by_text(f"notes.jpg: {NOT_AN_IMAGE}")).to_be_visible()
    # The API's words alone: what it says is damaged, not the preview's vaguer sentence too.
    expect(page.get_by_text("truncated.jpg: The image could not be decoded")).to_be_visible()
    expect(page.get_by_text(DAMAGED)).to_have_count(0)
    expect(
        page.get_by_text("60mp.png: The image is 60.0 megapixels; the limit is 50.0")
    ).to_be_visible()
    expect(page.get_by_text("Eskimo dog", exact=True)).to_be_visible()  # the BMP
    expect(page.get_by_text("Not sure — maybe")).to_be_visible()  # a red pixel is a guess

    # An unchanged file again: no new prediction, no second tile.
    page.locator('input[type="file"]').set_input_files([files[2]])  # type: ignore[list-item]
    expect(page.get_by_text("dog.bmp: already here, so not classified again.")).to_be_visible()
    expect(page.get_by_text("5 images: 2 answered, 3 refused")).to_be_visible()
    settle(page)
    page.mouse.move(0, 0)
    page.screenshot(path=SCREENSHOTS / f"ui-grid-{width}.png", full_page=True)

    # A tile's popover stays open through a rerun that moves it (the "already here" above the
    # grid goes): it was drawn afresh, closed, as "No" was chosen.
    page.get_by_role("button", name="Details and feedback").first.click()
    page.get_by_text("No", exact=True).click()
    settle(page)
    expect(page.get_by_text("What is it?")).to_be_visible()
    page.keyboard.press("Escape")
    settle(page)

    # Pasted (Ctrl+V with an image on the clipboard): classified as a drop would be.
    paste(page, sample("coffee.jpeg"), "image/jpeg")
    expect(page.get_by_text("6 images: 3 answered, 3 refused")).to_be_visible()
    expect(page.get_by_role("paragraph").filter(has_text="pasted-1.jpeg")).to_be_visible()
    settle(page)

    # A tile's feedback, in its popover: "No" keeps it open and asks what the picture is (it
    # closed, and a person took the "No" for sent). After a reload, as answers come back.
    page.reload()
    expect(page.get_by_text("6 images: 3 answered, 3 refused")).to_be_visible()
    settle(page)
    page.get_by_role("button", name="Details and feedback").first.click()
    page.get_by_text("No", exact=True).click()
    settle(page)
    expect(page.get_by_text("What is it?")).to_be_visible()
    choose_class(page, "Siberian husky")
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Thank you! Your feedback was saved.")).to_be_visible()
    page.keyboard.press("Escape")
    settle(page)
    # The next tile's too, once the one before it says "Feedback sent".
    expect(page.get_by_text("Feedback sent")).to_be_visible()
    page.get_by_role("button", name="Details and feedback").nth(1).click()
    page.get_by_text("No", exact=True).click()
    settle(page)
    expect(page.get_by_text("What is it?")).to_be_visible()
    page.keyboard.press("Escape")
    settle(page)

    with page.expect_download() as download:
        page.locator(".st-key-download-csv button").click()
    csv = Path(download.value.path()).read_text()
    assert csv.splitlines()[0].startswith("file,error,prediction,score")
    assert "dog.bmp,,Eskimo_dog," in csv
    page.locator(".st-key-clear-all button").click()  # asks first
    expect(page.get_by_text("feedback not yet sent is lost")).to_be_visible()
    expect(page.get_by_text("images:")).to_have_count(1)
    page.locator(".st-key-clear-all-yes button").click()
    expect(page.get_by_text("images:")).to_have_count(0)

    # A file that is not a picture, added beside one that is: each gets its card (the uploader
    # refused such files itself, and they vanished when it was replaced after the others).
    text_file = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"milk"}
    photo = {"name": "dog.jpeg", "mimeType": "image/jpeg", "buffer": dog}
    add_files(page, [text_file, photo], page.get_by_text(f"notes.txt: {NOT_AN_IMAGE}"))
    expect(page.get_by_text("2 images: 1 answered, 1 refused")).to_be_visible()

    if width != "desktop":
        return  # what follows does not depend on the width, and sends 21 MB to the page
    # A file over the size limit beside one within it: the large one is said not to be added,
    # in a note that stays while the other is classified (refused by the uploader itself, it
    # vanished when the uploader was replaced after the other).
    too_large = {"name": "big.jpg", "mimeType": "image/jpeg", "buffer": b"\xff" * 21 * 2**20}
    cat = {"name": "cat.jpeg", "mimeType": "image/jpeg", "buffer": sample("cat.jpeg")}
    add_files(page, [too_large, cat], page.get_by_text("3 images: 2 answered, 1 refused"))
    note = page.locator("#imgclf-too-large")
    expect(note).to_have_text("big.jpg: larger than the 20 MB limit, so not added.")
    box = note.bounding_box()
    assert box is not None
    assert box["width"] > 100, box
    # The same, dragged onto the uploader.
    settle(page)
    drop(page, "coffee.jpeg", sample("coffee.jpeg"), 21 * 2**20)
    expect(page.get_by_text("4 images: 3 answered, 1 refused")).to_be_visible()
    expect(note).to_have_text("big.jpg: larger than the 20 MB limit, so not added.")


def test_the_login_page_says_what_is_wrong_in_words_and_minutes(
    page: Page, ui_url: str, stack: Stack, account: Account, api: ApiForTests, width: str
) -> None:
    page.goto(ui_url)
    expect(page.get_by_role("tab", name="Log in")).to_be_visible()
    assert urlsplit(stack.api_url).netloc not in page.content()  # no internal address
    if width == "desktop":
        page.locator(".st-key-login-email input").fill("admin@example.com")
        page.locator(".st-key-login-password input").fill("admin")
        page.locator(".st-key-login-password input").blur()
        page.screenshot(path=SCREENSHOTS / "ui-login.png", clip=LOGIN_CLIP)

    page.get_by_role("tab", name="Sign up").click()
    page.locator(".st-key-signup-name input").fill("Ada")
    page.locator(".st-key-signup-email input").fill("ada-at-example.com")
    page.locator(".st-key-signup-password input").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text("Enter a valid email address, like name@example.com.")).to_be_visible()
    expect(page.get_by_text("Choose a password of at least 8 characters.")).to_be_visible()

    for _ in range(5):  # the email's budget of failures, spent from this machine
        assert isinstance(api.login(account.email, "wrong password"), ApiError)
    page.get_by_role("tab", name="Log in").click()
    log_in(page, account.email)
    expect(page.get_by_text("Too many failed logins; try again in 15 minutes")).to_be_visible()


def choose_class(page: Page, name: str) -> None:
    """Pick ``name`` in the "What is it?" select by typing its first word and pressing Enter,
    as a person would: the first class that matches is taken (free text, once offered first,
    saved the word typed instead)."""
    select = page.locator("[class*=st-key-fb-][class*=-class]")
    option = page.get_by_role("option", name=name, exact=True)
    for _attempt in range(3):
        select.wait_for()
        settle(page)
        select.click()
        try:
            page.get_by_role("listbox").wait_for(timeout=5_000)
            page.keyboard.type(name.split()[0])
            option.wait_for(timeout=10_000)
            page.mouse.move(0, 0)  # the keyboard's choice, not the one under the pointer
            page.keyboard.press("Enter")
        except Error:  # the list closed under us; open it again
            page.keyboard.press("Escape")
            continue
        if select.get_by_role("combobox").input_value() == name:
            # The choice reruns the script, which draws the form's buttons again: a click
            # sent before that ends could land on the old ones and be lost (it was, once).
            page.wait_for_timeout(300)
            settle(page)
            return
    pytest.fail(f"could not choose {name!r} in the class select")


def select_first_row(page: Page) -> None:
    """Tick the first row of History's table (drawn on a canvas: clicked where it is)."""
    select_row(page, 1)


def select_row(page: Page, number: int) -> None:
    """Tick row ``number`` (from 1) of History's table, its form then shown below it."""
    form = page.locator(".st-key-history-feedback")
    for _attempt in range(3):
        settle(page)
        page.wait_for_timeout(300)  # the grid draws after the script has run
        box = page.locator("[data-testid=stDataFrame]").bounding_box()
        assert box is not None
        # The header is 36 px high, the rows 64.
        page.mouse.click(box["x"] + 16, box["y"] + 36 + 64 * (number - 1) + 32)
        try:
            form.wait_for(timeout=5_000)
        except Error:
            continue
        return
    pytest.fail(f"could not select row {number} of History's table")


def test_a_login_survives_reloads_and_tabs_and_its_end_loses_no_feedback(
    context: BrowserContext,
    page: Page,
    ui_url: str,
    account: Account,
    api: ApiForTests,
    width: str,
) -> None:
    logged_in(page, ui_url, account)
    add_files(page, str(DOG_JPEG), page.get_by_role("heading", name="Eskimo dog"))
    expect(page.get_by_text("62.2% sure")).to_be_visible()
    expect(page.locator("[data-testid=stVegaLiteChart]")).to_be_visible()
    # Brought into view: on a phone the answer came below the first screen without a sign.
    expect(page.get_by_role("heading", name="Eskimo dog")).to_be_in_viewport()
    settle(page)
    if width == "desktop":
        page.mouse.move(0, 0)
        page.wait_for_timeout(500)  # let the chart finish drawing
        page.screenshot(path=SCREENSHOTS / "ui-classify.png")

    page.reload()
    expect(page.get_by_text("Signed in as")).to_be_visible()
    second = context.new_page()
    second.goto(ui_url)
    expect(second.get_by_text("Signed in as")).to_be_visible()

    # The answer came back with the reload; the same file again makes no new prediction.
    expect(page.get_by_role("heading", name="Eskimo dog")).to_be_visible()
    page.locator('input[type="file"]').set_input_files(str(DOG_JPEG))
    expect(page.get_by_text("dog.jpeg: already here, so not classified again.")).to_be_visible()
    # Used past its access token's lifetime: renewed, not logged out.
    time.sleep(ACCESS_TOKEN_SECONDS + 1)
    page.get_by_text("No", exact=True).click()
    choose_class(page, "Siberian husky")
    page.locator("[class*=st-key-fb-][class*=-comment] textarea").fill("Blue eyes.")
    page.locator("[class*=st-key-fb-][class*=-comment] textarea").blur()
    settle(page)
    expect(page.get_by_text("Signed in as")).to_be_visible()

    # The login ends (a logout in the other tab): this tab's next action finds it ended at
    # once, its access token still valid, and keeps the feedback not yet sent.
    second.get_by_role("button", name="Log out").click()
    expect(second.get_by_role("tab", name="Log in")).to_be_visible()
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text(LOGGED_OUT_KEPT_NOTICE)).to_be_visible()
    log_in(page, account.email)
    expect(page.get_by_text("Thank you! Your feedback was saved.")).to_be_visible()
    history = api.history(account.token)
    assert not isinstance(history, ApiError)
    assert history.feedback[0].feedback == "Wrong. Right class: Siberian_husky. Blue eyes."

    # History: one table; a row's feedback can be changed there.
    page.get_by_role("tab", name="History").click()
    expect(page.get_by_text("Page 1 of 1 · 1 prediction")).to_be_visible()
    select_first_row(page)
    # The form starts from what was said: "No", and the class named. (The Classify tab, drawn
    # behind, says it too, where its form was.)
    form = page.locator(".st-key-history-feedback")
    expect(
        form.get_by_text("You said: Wrong. Right class: Siberian husky. Blue eyes.")
    ).to_be_visible()
    expect(form.get_by_role("radio", name="No")).to_be_checked()
    expect(form.get_by_text("Siberian husky")).to_be_visible()
    expect(form.locator("textarea")).to_have_value("Blue eyes.")
    # The model in full, which the table's narrow column cuts.
    expect(
        page.get_by_text(re.compile(r"Eskimo dog, 62\.2%, by efficientnet-lite0@\d"))
    ).to_be_visible()
    settle(page)
    page.wait_for_timeout(500)  # let the thumbnails draw
    page.screenshot(path=SCREENSHOTS / f"ui-history-{width}.png", full_page=True)
    page.locator(".st-key-history-feedback").get_by_text("Yes", exact=True).click()
    page.locator(".st-key-history-feedback").get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Your feedback on dog.jpeg was saved.")).to_be_visible()
    history = api.history(account.token)
    assert not isinstance(history, ApiError)
    # The verdict changed; the note said before stayed (it was sent away, empty, before).
    assert history.feedback[0].feedback == "Correct. Blue eyes."


def test_the_api_docs_render_with_the_network_cut_off(browser: Browser, stack: Stack) -> None:
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

    page = browser.new_page()
    page.route("**/*", only_loopback)
    page.goto(f"{stack.api_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("imgclf")
    expect(page.get_by_text("Classify an image")).to_be_visible()
    page.goto(f"{stack.api_url}/redoc")
    expect(page.get_by_role("heading", name="imgclf")).to_be_visible()
    assert outside == []


def test_a_picked_model_answers_and_the_admin_sees_how_often_each_was_right(
    browser: Browser, ui_url: str, api_url: str, account: Account
) -> None:
    """At desktop width: the user picks the INT8 model and the card names it; the admin, with
    known feedback on that model, opens the Admin tab and sees the quality chart."""
    give_feedback(api_url, account, "second-model", correct=True)
    give_feedback(api_url, account, "second-model", correct=False)
    user = browser.new_context(viewport=VIEWPORTS["desktop"])  # type: ignore[arg-type]
    user.set_default_timeout(TIMEOUT_MS)
    page = logged_in(user.new_page(), ui_url, account)
    settle(page)
    page.get_by_text(re.compile(r"^Fast — ")).click()
    settle(page)
    add_files(page, str(DOG_JPEG), page.get_by_text("Answered by second-model@1"))
    expect(page.locator("[data-testid=stVegaLiteChart]")).to_be_visible()
    settle(page)
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)  # let the chart finish drawing
    page.screenshot(path=SCREENSHOTS / "ui-model-picker.png")
    expect(page.get_by_role("tab", name="Admin")).to_have_count(0)  # a user has none
    user.close()

    admin = browser.new_context(viewport=VIEWPORTS["desktop"])  # type: ignore[arg-type]
    admin.set_default_timeout(TIMEOUT_MS)
    page = admin.new_page()
    page.goto(ui_url)
    log_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.get_by_role("tab", name="Admin").click()
    expect(page.get_by_text("Most corrected classes")).to_be_visible()
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    expect(chart).to_be_visible()
    expect(chart.locator("canvas, svg").first).to_be_visible()
    expect(page.get_by_text("no shadow comparison is set").first).to_be_visible()
    settle(page)
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)
    page.screenshot(path=SCREENSHOTS / "ui-admin.png", full_page=True)
    admin.close()


@contextmanager
def history_of(
    browser: Browser, ui_url: str, account: Account, api: ApiForTests, *, uploads: int, width: str
) -> Iterator[Page]:
    """History's tab open in a new browser of ``width``, over ``uploads`` predictions of the
    dog (``dog-0.jpeg`` first, so the newest is on top)."""
    for n in range(uploads):
        assert not isinstance(
            api.predict(account.token, f"dog-{n}.jpeg", DOG_JPEG.read_bytes()), ApiError
        )
    context = browser.new_context(viewport=VIEWPORTS[width])  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = logged_in(context.new_page(), ui_url, account)
        page.get_by_role("tab", name="History").click()
        expect(page.get_by_text(re.compile(r"Page 1 of \d+"))).to_be_visible()
        yield page
    finally:
        context.close()


def test_a_history_row_picked_on_a_phone_brings_its_form_into_view(
    browser: Browser, ui_url: str, account: Account, api: ApiForTests
) -> None:
    """Ten rows fill a phone's screen: the form of the one picked came below them, unseen."""
    with history_of(browser, ui_url, account, api, uploads=10, width="phone") as page:
        select_first_row(page)
        expect(page.locator(".st-key-history-feedback")).to_be_in_viewport()


def test_a_note_typed_in_history_is_still_there_after_looking_at_another_row(
    browser: Browser, ui_url: str, account: Account, api: ApiForTests
) -> None:
    """Streamlit forgets a widget's value after a run that does not draw it: a draft typed for
    one row was gone after picking another row and coming back."""
    with history_of(browser, ui_url, account, api, uploads=2, width="desktop") as page:
        select_first_row(page)
        form = page.locator(".st-key-history-feedback")
        expect(form.get_by_text("Feedback on dog-1.jpeg")).to_be_visible()
        form.locator("textarea").fill("Not sent yet.")
        form.locator("textarea").blur()
        settle(page)
        select_row(page, 2)
        expect(form.get_by_text("Feedback on dog-0.jpeg")).to_be_visible()
        expect(form.locator("textarea")).to_have_value("")
        select_row(page, 1)
        expect(form.get_by_text("Feedback on dog-1.jpeg")).to_be_visible()
        expect(form.locator("textarea")).to_have_value("Not sent yet.")
        page.get_by_role("tab", name="Classify").click()
        page.get_by_role("tab", name="History").click()
        select_first_row(page)
        expect(form.locator("textarea")).to_have_value("Not sent yet.")


def test_back_and_forward_go_between_the_tabs(
    browser: Browser, ui_url: str, account: Account
) -> None:
    """Back left the app for the page before it: the tabs added no history entry."""
    context = browser.new_context(viewport=VIEWPORTS["desktop"])  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto("about:blank")
        logged_in(page, ui_url, account)
        history_tab = page.get_by_role("tab", name="History")
        classify_tab = page.get_by_role("tab", name="Classify")
        on_history = (history_tab, page.get_by_text("No predictions yet"))
        on_classify = (classify_tab, page.get_by_text("Signed in as"))

        def shows(tab_and_content: tuple[Locator, Locator]) -> None:
            tab, content = tab_and_content
            expect(tab).to_have_attribute("aria-selected", "true")
            expect(content).to_be_visible()
            settle(page)

        history_tab.click()
        shows(on_history)
        page.go_back()
        shows(on_classify)
        page.go_forward()
        shows(on_history)

        # A reload keeps the open tab (it went back to Classify): the address names it.
        assert page.url.endswith("?view=History"), page.url
        page.reload()
        shows(on_history)
        classify_tab.click()
        shows(on_classify)
        assert "view=" not in page.url, page.url
        page.reload()
        shows(on_classify)
    finally:
        context.close()
