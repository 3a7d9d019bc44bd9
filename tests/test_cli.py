"""The ``imgclf`` command's foundation verbs: help, populate, serve and its refusals."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imgclf.cli import app
from tests.support import ServedApi

runner = CliRunner()


def test_help_explains_each_verb() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    verbs = ["serve", "populate", "worker", "ui", "up", "predict", "export-model"]
    for verb in [*verbs, "models", "export-feedback"]:
        assert verb in result.output


def test_populate_twice_is_idempotent(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCLF_DATABASE_URL", database_url)
    first = runner.invoke(app, ["populate"])
    assert first.exit_code == 0, first.output
    assert "admin admin@example.com created" in first.output
    second = runner.invoke(app, ["populate"])
    assert second.exit_code == 0, second.output
    assert "admin admin@example.com already present" in second.output


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, "IMGCLF_SECRET_KEY is the development default"),
        (
            {"IMGCLF_SECRET_KEY": "a-production-secret-key-of-forty-characters"},
            "IMGCLF_ADMIN_PASSWORD is the development default",
        ),
        (
            {"IMGCLF_SECRET_KEY": "a" * 36},
            "IMGCLF_SECRET_KEY must hold at least 8 different characters",
        ),
    ],
)
@pytest.mark.parametrize("verb", ["serve", "populate"])
def test_production_with_default_secrets_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str, verb: str
) -> None:
    monkeypatch.setenv("IMGCLF_ENV", "production")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, [verb])
    assert result.exit_code == 2
    assert message in result.output
    assert not Path("data").exists()  # refused before touching anything


@pytest.mark.slow
def test_bare_serve_on_an_empty_data_dir_is_ready_to_log_in(
    tmp_path: Path, model_dir: Path
) -> None:
    with ServedApi(tmp_path / "serve.log", tmp_path / "served", model_dir=model_dir) as api:
        admin = {"username": "admin@example.com", "password": "admin"}
        assert httpx.post(f"{api.url}/login", data=admin).status_code == 200
    output = api.output()
    assert f"{api.url}/docs" in output
    assert "Admin login: admin@example.com" in output
    assert "password: admin (the development default)" in output
