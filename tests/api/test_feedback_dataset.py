"""``imgclf export-feedback DIR``: real uploads classified by the real model, feedback given
through the API, exported and read back as an ImageFolder whose labels match the feedback."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from imgclf.cli import app as cli
from imgclf.serving import create_service_app
from imgclf.settings import Settings, get_settings
from tests.support import DOG_JPEG

from .conftest import Caller

SALT = "a salt that stays with the operator"


@pytest.fixture
def settings(database_url: str, model_dir: Path) -> Settings:
    return Settings(database_url=database_url, model_dir=model_dir, model_threads=1)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_service_app(settings)


def photo(variant: int) -> bytes:
    """The dog, cropped a little differently each time: another upload, another file."""
    buffer = io.BytesIO()
    with Image.open(DOG_JPEG) as image:
        image.convert("RGB").crop((variant * 4, 0, image.width, image.height)).save(
            buffer, format="PNG" if variant % 2 else "JPEG"
        )
    return buffer.getvalue()


def upload(client: TestClient, owner: Caller, variant: int) -> dict[str, object]:
    name = f"photo{variant}.{'png' if variant % 2 else 'jpg'}"
    answer = client.post(
        "/model/predict", files={"file": (name, photo(variant), "image/*")}, headers=owner.headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def say(
    client: TestClient, owner: Caller, prediction: dict[str, object], **verdict: object
) -> None:
    answer = client.post(
        "/feedback/",
        json={"prediction_id": prediction["prediction_id"], **verdict},
        headers=owner.headers,
    )
    assert answer.status_code == 201, answer.text


def export(settings: Settings, target: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("IMGCLF_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("IMGCLF_MODEL_DIR", str(settings.resolved_model_dir))
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["export-feedback", str(target), "--salt", SALT])
    assert result.exit_code == 0, result.output
    return result.output


def read_back(target: Path) -> dict[int, tuple[str, str]]:
    """Walk the ImageFolder as a training loader would: every file must open as an image.
    Returns prediction id -> (class folder, file sha256), through the manifest's rows; every
    file is some row's."""
    found = {}
    for folder in sorted(p for p in target.iterdir() if p.is_dir()):
        for file in folder.iterdir():
            with Image.open(file) as image:
                image.verify()
            found[f"{folder.name}/{file.name}"] = hashlib.sha256(file.read_bytes()).hexdigest()
    rows = json.loads((target / "manifest.json").read_text())["images"]
    assert {row["file"] for row in rows} == set(found)
    return {row["prediction_id"]: (row["file"].split("/")[0], found[row["file"]]) for row in rows}


def test_the_export_reads_back_as_images_labelled_by_their_feedback(
    client: TestClient,
    admin: Caller,
    settings: Settings,
    make_user: Callable[..., Caller],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, bob = make_user(), make_user()
    right, corrected, crane, no_class, unmarked, bobs, gone = (
        upload(client, alice if n != 5 else bob, n) for n in range(7)
    )
    say(client, alice, right, correct=True)
    say(client, alice, corrected, correct=False, correct_class="n02123159")
    say(client, alice, crane, correct=False, correct_class="crane")
    say(client, alice, no_class, correct=False)
    say(client, alice, unmarked, feedback="nice")
    say(client, bob, bobs, correct=True)
    say(client, alice, gone, correct=True)
    (settings.upload_dir / str(gone["image_file_name"])).unlink()
    quality = client.get("/models/quality", headers=admin.headers).json()["models"]
    assert [(q["model"], q["predictions"], q["right"], q["wrong"]) for q in quality] == [
        (right["model"], 7, 3, 3)
    ]

    target = tmp_path / "dataset"
    printed = export(settings, target, monkeypatch)
    assert "4 images in" in printed
    assert "1 skipped: their files are no longer in the uploads folder" in printed

    expected = {
        int(str(p["prediction_id"])): (folder, p)
        for folder, p in [
            (f"{wnid(settings, str(right['prediction']))}_{right['prediction']}", right),
            ("n02123159_tiger_cat", corrected),
            ("crane", crane),  # two ImageNet classes are called crane: no WordNet id
            (f"{wnid(settings, str(bobs['prediction']))}_{bobs['prediction']}", bobs),
        ]
    }
    found = read_back(target)
    assert {pid: folder for pid, (folder, _) in found.items()} == {
        pid: folder for pid, (folder, _) in expected.items()
    }
    for pid, (_, prediction) in expected.items():
        stored = settings.upload_dir / str(prediction["image_file_name"])
        assert found[pid][1] == hashlib.sha256(stored.read_bytes()).hexdigest()

    manifest = json.loads((target / "manifest.json").read_text())
    rows = {row["prediction_id"]: row for row in manifest["images"]}
    assert set(rows) == set(expected)
    assert manifest["missing_files"] == 1
    for pid, (folder, prediction) in expected.items():
        row = rows[pid]
        assert row["file"].split("/")[0] == folder
        assert row["predicted_class"] == prediction["prediction"]
        assert row["score"] == pytest.approx(prediction["score"], abs=1e-4)
        assert row["model"] == prediction["model"]
        assert row["feedback"] == (
            "wrong" if pid in (corrected["prediction_id"], crane["prediction_id"]) else "right"
        )
    assert rows[corrected["prediction_id"]]["right_class"] == "tiger_cat"
    users = {rows[p["prediction_id"]]["user"] for p in (right, corrected, crane)}
    assert len(users) == 1
    assert users != {rows[bobs["prediction_id"]]["user"]}
    with (target / "manifest.csv").open(newline="") as file:
        assert [dict(row) for row in csv.DictReader(file)] == [
            {key: str(value) for key, value in row.items()} for row in manifest["images"]
        ]
    written = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    assert SALT.encode() not in written
    keyed = hmac.new(SALT.encode(), str(alice.id).encode(), hashlib.sha256).hexdigest()[:16]
    assert users == {keyed}


def wnid(settings: Settings, name: str) -> str:
    labels = json.loads((settings.resolved_model_dir / "labels.json").read_text())
    return next(label["wnid"] for label in labels if label["name"] == name)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "dataset"


@pytest.fixture
def export_again(
    settings: Settings, target: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], str]:
    """``imgclf export-feedback`` into ``target``, run again at each call; what it printed."""
    return lambda: export(settings, target, monkeypatch)


def test_running_it_again_changes_only_what_feedback_changed(
    client: TestClient,
    make_user: Callable[..., Caller],
    target: Path,
    export_again: Callable[[], str],
) -> None:
    alice = make_user()
    first, second = upload(client, alice, 1), upload(client, alice, 2)
    say(client, alice, first, correct=True)
    say(client, alice, second, correct=False, correct_class="malamute")
    export_again()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in target.rglob("*") if p.is_file()}

    assert "(0 copied, 0 removed)" in export_again()
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in target.rglob("*") if p.is_file()}
    assert {p: b for p, (b, _) in after.items()} == {p: b for p, (b, _) in before.items()}
    images = [p for p in before if p.suffix != ".json" and p.suffix != ".csv"]
    assert all(after[p][1] == before[p][1] for p in images)  # not copied again

    say(client, alice, second, correct=True)  # changed her mind: it was right
    assert "(1 copied, 1 removed)" in export_again()
    assert not (target / "n02110063_malamute").exists()
    assert len(read_back(target)) == 2


def test_a_picture_sent_again_and_again_is_one_example_per_user_with_their_newest_verdict(
    client: TestClient,
    settings: Settings,
    make_user: Callable[..., Caller],
    target: Path,
    export_again: Callable[[], str],
) -> None:
    """Repeats cost no quota: 30 predictions of one picture, each marked, once made 30 copies
    under whatever classes their sender chose."""
    alice, bob = make_user(), make_user()
    repeats = [upload(client, alice, 3) for _ in range(30)]
    for n, prediction in enumerate(repeats):
        say(client, alice, prediction, correct=False, correct_class=("tabby", "tiger_cat")[n % 2])
    say(client, alice, repeats[4], correct=False, correct_class="malamute")  # her last word
    say(client, bob, upload(client, bob, 3), correct=False, correct_class="malamute")
    say(client, bob, upload(client, bob, 5), correct=True)

    assert "(2 copied, 0 removed)" in export_again()
    found = read_back(target)
    assert sorted(folder for folder, _ in found.values()) == sorted(
        ["n02110063_malamute", "n02110063_malamute", f"{wnid(settings, 'Eskimo_dog')}_Eskimo_dog"]
    )
    assert repeats[4]["prediction_id"] in found  # the prediction of her newest verdict
    files = [p for p in target.rglob("*") if p.is_file() and p.suffix not in (".json", ".csv")]
    assert len(files) == 2  # the picture both said is a malamute, stored once


def test_a_folder_that_is_not_an_export_is_refused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: TestClient
) -> None:
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"mine")
    monkeypatch.setenv("IMGCLF_DATABASE_URL", settings.resolved_database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["export-feedback", str(target)])
    assert result.exit_code == 2
    assert "holds files and no manifest.json: it is not an earlier export" in result.output
    assert (target / "holiday.jpg").read_bytes() == b"mine"


def test_an_export_that_cannot_be_written_says_why_and_leaves_the_last_one_whole(
    client: TestClient,
    make_user: Callable[..., Caller],
    target: Path,
    export_again: Callable[[], str],
) -> None:
    """The manifests are written a row at a time beside their names and put in place at the
    end: an export that fails half way leaves the last one's as they were, and says why."""
    alice = make_user()
    say(client, alice, upload(client, alice, 1), correct=True)
    export_again()
    manifests = {name: (target / name).read_bytes() for name in ("manifest.json", "manifest.csv")}
    say(client, alice, upload(client, alice, 2), correct=False, correct_class="malamute")
    (target / "n02110063_malamute").write_bytes(b"in the way")  # where its class folder goes

    result = CliRunner().invoke(cli, ["export-feedback", str(target), "--salt", SALT])
    assert result.exit_code == 2
    assert "The export stopped: File exists" in result.output
    assert "the last export's manifests are as they were" in result.output
    assert "n02110063_malamute" in result.output
    assert {name: (target / name).read_bytes() for name in manifests} == manifests
    assert not [p.name for p in target.iterdir() if p.name.endswith(".tmp")]
    assert len(read_back(target)) == 1
