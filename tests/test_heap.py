"""The served process freezes its start-up heap; an app built in a test's process does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Builds the app the way `imgclf serve` does in each of its processes, runs its lifespan, and
# prints how many objects the collector no longer scans.
SERVED = """
import gc
from fastapi.testclient import TestClient
from imgclf.serving import create_served_app, create_service_app, populate
from imgclf.settings import get_settings
populate(get_settings())  # as `imgclf serve` does before its processes start
factory = create_served_app if sys.argv[1] == "served" else create_service_app
with TestClient(factory()) as client:
    assert client.get("/health/ready").status_code == 200
    print(gc.get_freeze_count())
"""


def frozen_objects(factory: str, model_dir: Path, tmp_path: Path) -> int:
    tmp_path.mkdir()
    env = os.environ | {
        "IMGCLF_DATA_DIR": str(tmp_path),
        "IMGCLF_MODEL_DIR": str(model_dir),
        "IMGCLF_QUEUE_URL": "",
        "IMGCLF_DATABASE_URL": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + SERVED, factory],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.strip().splitlines()[-1])


def test_only_the_served_app_freezes_what_its_start_up_built(
    model_dir: Path, tmp_path: Path
) -> None:
    # The served process's heap: the framework, the routes, the model (hundreds of thousands
    # of objects), left out of every full collection from then on.
    assert frozen_objects("served", model_dir, tmp_path / "served") > 50_000
    # A test's process builds many apps; freezing there would keep each one's cycles forever.
    assert frozen_objects("test", model_dir, tmp_path / "test") == 0
