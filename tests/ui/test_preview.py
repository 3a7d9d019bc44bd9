"""Previews of uploads: thumbnails from a bounded decode, and an error card, not gigabytes, for a
picture past the limits (a 13000x13000 PNG took the page 2.7 s and 700 MB to preview)."""

from __future__ import annotations

import io
import time
from functools import cache

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgclf.ui import session
from imgclf.ui.classify_view import SAMPLES
from imgclf.ui.launch import APP_PATH
from imgclf.ui.preview import DAMAGED, NOT_AN_IMAGE, PREVIEW_SIDE, make_preview
from tests.conftest import DOG_JPEG
from tests.security.hostile_files import flat_png, jpeg_with_repeated_scans
from tests.support import PeakMemory
from tests.ui.conftest import Account

TOO_LARGE = "The image is 169.0 megapixels; the limit is 50.0 megapixels."


@cache
def huge_png() -> bytes:
    """13000 x 13000 RGBA (676 MB decoded) in 0.6 MB."""
    return flat_png(13_000, 13_000, 8, 6, 4)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def opened(data: bytes | None) -> Image.Image:
    assert data is not None
    return Image.open(io.BytesIO(data))


def test_a_photo_gets_a_thumbnail_of_its_shape() -> None:
    preview = make_preview(DOG_JPEG.read_bytes())
    picture = opened(preview.picture)
    assert (picture.format, picture.size) == ("JPEG", (PREVIEW_SIDE, 341))  # 729 x 486
    assert preview.refusal is None


def test_a_transparent_picture_stays_transparent() -> None:
    picture = opened(make_preview(encode(Image.new("RGBA", (40, 30)), "PNG")).picture)
    assert (picture.format, picture.mode, picture.getpixel((0, 0))) == ("PNG", "RGBA", (0,) * 4)


def test_a_photo_taken_sideways_is_shown_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter: shown rotated 90 degrees clockwise
    data = encode(Image.new("RGB", (600, 300)), "JPEG", exif=exif.tobytes())
    assert opened(make_preview(data).picture).size == (256, PREVIEW_SIDE)


def test_what_is_not_a_picture_gets_no_preview_and_says_why() -> None:
    text = make_preview(b"not an image")
    assert (text.picture, text.refusal, text.not_an_image) == (None, NOT_AN_IMAGE, True)
    truncated = make_preview(DOG_JPEG.read_bytes()[:2000])
    assert (truncated.picture, truncated.refusal, truncated.not_an_image) == (None, DAMAGED, False)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pictures_past_the_limits_are_refused_without_decoding() -> None:
    with PeakMemory() as memory:
        huge = make_preview(huge_png())
        scans = make_preview(jpeg_with_repeated_scans(7_000, 10_000))
    assert (huge.picture, huge.refusal) == (None, TOO_LARGE)
    assert scans.refusal is not None
    assert "the limit is 100" in scans.refusal
    assert memory.grown_mb < 100, f"{memory.grown_mb:.0f} MB"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_page_shows_an_error_card_for_a_picture_too_large_to_preview(
    monkeypatch: pytest.MonkeyPatch, api_url: str, account: Account
) -> None:
    monkeypatch.setenv("IMGCLF_API_URL", api_url)
    app = AppTest.from_file(str(APP_PATH), default_timeout=30)
    app.session_state[session.TOKEN] = account.token
    app.session_state[session.RENEW_AT] = time.time() + 3600
    app.session_state[session.USER] = account.user
    app.run()
    app.file_uploader(key="uploader-0").set_value(
        [
            ("huge.png", huge_png(), "image/png"),
            ("dog.jpeg", DOG_JPEG.read_bytes(), "image/jpeg"),
        ]
    )
    with PeakMemory() as memory:
        app.run()
    assert not app.exception
    (card,) = (error.value for error in app.error)
    assert card == f"**huge\\.png**: {TOO_LARGE}"  # the API refused it for the same reason
    assert len(app.get("image")) == len(SAMPLES) + 1  # the samples' and the dog's pictures
    assert memory.grown_mb < 100, f"{memory.grown_mb:.0f} MB"
