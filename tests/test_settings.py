"""Settings: environment variables with the IMGCLF_ prefix, a .env file, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imgclf.settings import Settings, get_settings

STRONG_SECRET = "a-production-secret-key-of-forty-characters"


def test_defaults_suit_a_laptop(tmp_path: Path) -> None:
    settings = Settings()
    assert (settings.env, settings.host, settings.port) == ("development", "127.0.0.1", 8000)
    assert settings.access_token_minutes == 30
    assert settings.admin_email == "admin@example.com"
    assert settings.admin_password.get_secret_value() == "admin"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'imgclf.db'}"
    assert settings.upload_dir == tmp_path / "data" / "uploads"
    assert "change-me" not in repr(settings)  # secrets stay masked


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("IMGCLF_PORT=9001\nIMGCLF_ACCESS_TOKEN_MINUTES=5\n")
    monkeypatch.setenv("IMGCLF_DATABASE_URL", "postgresql+psycopg://u@db/imgclf")
    settings = get_settings()
    assert (settings.port, settings.access_token_minutes) == (9001, 5)
    assert settings.resolved_database_url == "postgresql+psycopg://u@db/imgclf"
    assert get_settings() is settings  # cached


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "IMGCLF_SECRET_KEY is the development default"),
        ({"secret_key": "short"}, "IMGCLF_SECRET_KEY must be at least 32 characters"),
        ({"secret_key": STRONG_SECRET}, "IMGCLF_ADMIN_PASSWORD is the development default"),
        (
            {"secret_key": STRONG_SECRET, "admin_password": "short"},
            "IMGCLF_ADMIN_PASSWORD must be at least 12 characters",
        ),
        ({"secret_key": "a" * 36}, "IMGCLF_SECRET_KEY must hold at least 8 different characters"),
        ({"secret_key": "password" * 5}, "IMGCLF_SECRET_KEY must hold at least 8 different"),
    ],
)
def test_production_refuses_unsafe_defaults(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(env="production", **values)


@pytest.mark.usefixtures("production_argon2")
def test_production_accepts_real_secrets() -> None:
    settings = Settings(
        env="production", secret_key=STRONG_SECRET, admin_password="s3cret!x-long-enough"
    )
    assert settings.is_production


@pytest.mark.parametrize(
    "cost", [{"password_hash_time_cost": 1}, {"password_hash_memory_kib": 19 * 1024 - 1}]
)
def test_production_refuses_password_hashes_cheaper_than_owasps_floor(
    cost: dict[str, int],
) -> None:
    values = {"password_hash_time_cost": 3, "password_hash_memory_kib": 65536, **cost}
    with pytest.raises(ValidationError, match="OWASP's floor for Argon2id"):
        Settings(
            env="production",
            secret_key=STRONG_SECRET,
            admin_password="s3cret!x-long-enough",
            **values,
        )


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [
        f"IMGCLF_{name.upper()}"
        for name in Settings.model_fields
        if f"| `IMGCLF_{name.upper()}` |" not in readme
    ]
    assert missing == [], "add these to the README's Configuration table"
