"""deploy/docker-compose.yml and deploy/.env.example against the settings the code reads.

No Docker engine runs here, so these check what `docker compose up` relies on: the services and
their order, health checks, production mode, and that every IMGCLF_ variable is a real setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from imgclf.settings import Settings

from .dockerfile import stages

DEPLOY = Path(__file__).parents[2] / "deploy"
SERVICES = {"api", "worker", "ui", "redis", "db", "migrate", "prometheus"}
ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env_example() -> dict[str, str]:
    """Every variable the example names, set or commented out (then its default)."""
    names = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            names[match["name"]] = match["value"]
    return names


def setting_variables() -> set[str]:
    return {f"IMGCLF_{name.upper()}" for name in Settings.model_fields}


def test_the_services_of_the_seed_topology_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_imgclf_variable_in_compose_is_a_setting(compose: dict[str, Any]) -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    used = set(re.findall(r"\bIMGCLF_[A-Z0-9_]+", text))
    for service in compose["services"].values():
        used |= set(service.get("environment", {}))
    used = {name for name in used if name.startswith("IMGCLF_")}
    assert used, "compose sets no IMGCLF_ variable"
    assert used - setting_variables() == set()


def test_env_example_names_every_setting_and_nothing_else() -> None:
    named = {name for name in env_example() if name.startswith("IMGCLF_")}
    assert named - setting_variables() == set(), "not settings of imgclf"
    missing = setting_variables() - named
    assert missing == set(), "add these settings to deploy/.env.example with their meaning"


def test_compose_interpolations_are_documented_in_env_example() -> None:
    text = (DEPLOY / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert interpolated - set(env_example()) == set()


@pytest.mark.usefixtures("production_argon2")
def test_env_example_refuses_production_until_its_secrets_are_set(tmp_path: Path) -> None:
    example = DEPLOY / ".env.example"
    with pytest.raises(ValidationError, match="IMGCLF_SECRET_KEY"):
        Settings(_env_file=example, env="production")
    filled = tmp_path / ".env"
    text = example.read_text()
    text = text.replace(
        "IMGCLF_SECRET_KEY=change-me",
        "IMGCLF_SECRET_KEY=a-production-secret-key-of-forty-characters",
    )
    text = text.replace("IMGCLF_ADMIN_PASSWORD=admin", "IMGCLF_ADMIN_PASSWORD=a-strong-one")
    filled.write_text(text)
    settings = Settings(_env_file=filled, env="production")
    assert settings.is_production
    assert settings.web_concurrency == 2


def test_production_mode_for_every_imgclf_service_with_secrets(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("api", "worker", "migrate"):
        assert services[name]["environment"]["IMGCLF_ENV"] == "production", name
        assert services[name]["env_file"] == ".env", name
    # The public-facing UI holds no secret.
    assert "env_file" not in services["ui"]
    assert services["ui"]["environment"]["IMGCLF_API_URL"] == "http://api:8000"


def test_start_order_migrate_before_api(services: dict[str, dict[str, Any]]) -> None:
    depends = services["api"]["depends_on"]
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["db"] == {"condition": "service_healthy"}
    assert depends["redis"] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["db"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    assert services["worker"]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["ui"]["depends_on"]["api"] == {"condition": "service_healthy"}


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    built = stages()
    for name in ("db", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in str(services["db"]["healthcheck"]["test"])
    for name in ("api", "worker", "ui"):
        target = services[name]["build"]["target"]
        assert "healthcheck" in services[name] or built[target].healthcheck, name


def test_queue_and_database_point_at_their_services(services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "worker"):
        assert services[name]["environment"]["IMGCLF_QUEUE_URL"] == "redis://redis:6379/0"
    for name in ("api", "migrate"):
        url = services[name]["environment"]["IMGCLF_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://")
        assert "@db:5432/" in url


def test_workers_scale_and_ports_are_published(services: dict[str, dict[str, Any]]) -> None:
    # `docker compose up --scale worker=4` needs no fixed name and no host port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    assert any(str(p).endswith(":8000") for p in services["api"]["ports"])
    assert any(str(p).endswith(":8501") for p in services["ui"]["ports"])
    assert "IMGCLF_WEB_CONCURRENCY" in str(services["api"]["environment"])


def test_images_are_pinned_and_data_persists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["db"]["image"] == "postgres:15-bookworm"
    assert re.fullmatch(r"redis:7(\.\d+)*-bookworm", services["redis"]["image"])
    assert "db-data:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert "uploads:/data" in services["api"]["volumes"]
    assert {"db-data", "uploads"} <= set(compose["volumes"])
    redis_command = [str(part) for part in services["redis"]["command"]]
    assert redis_command[redis_command.index("--appendonly") + 1] == "no"


def test_builds_use_the_dockerfile_targets(services: dict[str, dict[str, Any]]) -> None:
    built = stages()
    for name in ("api", "worker", "ui", "migrate"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert build["target"] in built, name


def test_prometheus_is_opt_in_and_scrapes_the_api_with_the_token(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    api, workers = config["scrape_configs"]
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    assert api["authorization"]["credentials_file"] == "metrics-token"
    worker_env = services["worker"]["environment"]
    assert workers["dns_sd_configs"][0]["names"] == ["worker"]
    assert workers["dns_sd_configs"][0]["port"] == int(worker_env["IMGCLF_WORKER_METRICS_PORT"])
    assert "IMGCLF_METRICS_TOKEN" in env_example()
