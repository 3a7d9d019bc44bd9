"""``imgclf predict``: files and folders, table or JSON lines, bad files reported and skipped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from model_helpers import TEST_DATA
from typer.testing import CliRunner, Result

from imgclf.cli import app

DOG = TEST_DATA / "dog.jpeg"
Invoke = Callable[..., Result]


@pytest.fixture
def run(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setenv("IMGCLF_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("IMGCLF_MODEL_THREADS", "2")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, ["predict", *args])

    return invoke


def test_the_dog_prints_eskimo_dog(run: Invoke) -> None:
    result = run(str(DOG))
    assert result.exit_code == 0, result.output
    assert "Eskimo_dog" in result.stdout
    assert "0.6222" in result.stdout


def test_json_lines(run: Invoke) -> None:
    result = run("--json", "--top-k", "3", str(DOG))
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    answer = json.loads(line)
    assert answer["path"] == str(DOG)
    assert answer["prediction"] == "Eskimo_dog"
    assert answer["score"] == pytest.approx(0.6222, abs=2e-4)
    assert [entry["label"] for entry in answer["top_k"]][:2] == ["Eskimo_dog", "Siberian_husky"]


def test_a_folder_with_bad_files(run: Invoke, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for i in range(9):  # enough files for the progress bar
        shutil.copy(DOG, folder / f"dog{i}.jpeg")
    shutil.copy(DOG, folder / "nested" / "DOG.JPG")
    (folder / "broken.jpg").write_bytes(DOG.read_bytes()[:3000])
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    result = run("--json", str(folder), str(tmp_path / "missing.png"))
    assert result.exit_code == 1
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 10
    assert {a["prediction"] for a in answers} == {"Eskimo_dog"}
    assert "broken.jpg" in result.stderr
    assert "could not be decoded" in result.stderr
    assert "missing.png" in result.stderr
    assert "notes.txt" not in result.output


def test_a_text_file_named_explicitly_is_refused(run: Invoke, tmp_path: Path) -> None:
    text = tmp_path / "photo.jpg"
    text.write_text("hello")
    result = run(str(text), str(DOG))
    assert result.exit_code == 1
    assert "File type is not supported." in result.stderr
    assert "Eskimo_dog" in result.stdout


def test_a_missing_bundle_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGCLF_MODEL_DIR", str(tmp_path / "no-bundle"))
    result = CliRunner().invoke(app, ["predict", str(DOG)])
    assert result.exit_code == 2
    assert "imgclf export-model" in result.stderr


def test_a_model_of_the_repository_by_name(
    model_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGCLF_MODEL_REPOSITORY", str(model_repository))
    monkeypatch.setenv("IMGCLF_MODEL_THREADS", "1")
    named = CliRunner().invoke(app, ["predict", "--model", "second-model@1", str(DOG)])
    unknown = CliRunner().invoke(app, ["predict", "--model", "resnet50", str(DOG)])

    assert named.exit_code == 0, named.output
    assert "Eskimo_dog" in named.stdout
    assert unknown.exit_code == 2
    assert "No model 'resnet50' in the repository; it has: efficientnet-lite0, second-model" in (
        unknown.output
    )
