"""Each container image installs one extra (`api`, `worker`, `ui`): its role must run without the
others. Checked without Docker by running the role's code with the other roles' packages made
unimportable (a ``sys.meta_path`` finder that refuses them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKER = """
import sys
BLOCKED = {blocked!r}

class RefuseOtherRoles:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed in this image")
        return None

sys.meta_path.insert(0, RefuseOtherRoles())
"""

# What each image lacks: only the role's own extra (and the base dependencies) is installed.
NOT_IN_API = {"onnxruntime", "torch", "onnx", "streamlit"}
NOT_IN_WORKER = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "jwt"}
NOT_IN_WORKER |= {"pwdlib", "streamlit", "torch", "onnx"}
NOT_IN_UI = {"fastapi", "sqlalchemy", "alembic", "psycopg", "onnxruntime", "torch", "redis"}
NOT_IN_UI |= {"opentelemetry"}


def run_as_role(blocked: set[str], body: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_api_in_redis_mode_runs_without_onnxruntime_or_torch(
    redis_url: str, tmp_path: Path
) -> None:
    body = """
    from fastapi.testclient import TestClient
    from imgclf.serving import create_service_app
    from imgclf.settings import Settings

    settings = Settings(queue_url=sys.argv[1], data_dir=sys.argv[2])
    with TestClient(create_service_app(settings)) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready").json()
        assert ready["checks"]["queue"] == "ok", ready
    import imgclf.cli, imgclf.serving, imgclf.api.predictions.uploads
    print("api ok")
    """
    result = run_as_role(NOT_IN_API, body, redis_url, str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert "api ok" in result.stdout


def test_worker_runs_without_the_web_stack(model_dir: Path) -> None:
    body = """
    from imgclf.model.classifier import load_classifier
    from imgclf.settings import Settings
    import imgclf.cli, imgclf.worker.main

    classifier = load_classifier(Settings(model_dir=sys.argv[1], model_threads=1))
    print("worker ok", classifier.model_id)
    """
    result = run_as_role(NOT_IN_WORKER, body, str(model_dir))
    assert result.returncode == 0, result.stderr
    assert "worker ok" in result.stdout


def test_ui_runs_without_the_api_or_model_stack() -> None:
    # Every module of the UI package but the page script itself (Streamlit runs that one).
    body = """
    import importlib, pkgutil
    import imgclf.cli, imgclf.ui

    for module in pkgutil.iter_modules(imgclf.ui.__path__):
        if module.name != "app":
            importlib.import_module(f"imgclf.ui.{module.name}")
    print("ui ok")
    """
    result = run_as_role(NOT_IN_UI, body)
    assert result.returncode == 0, result.stderr
    assert "ui ok" in result.stdout
