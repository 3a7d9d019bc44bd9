"""``imgclf export-feedback`` against what a real service left in its data folder, with the
folder tampered with: it copies only the uploads the service stored, and only out of it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from imgclf.launcher import environment, imgclf_command
from tests.security.test_exposure import predict, sign_up
from tests.support import ServedApi


def export(data_dir: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = environment({"data_dir": data_dir}, clean=True)
    command = [*imgclf_command(), "export-feedback", str(target)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_the_export_copies_stored_uploads_only_and_never_into_them(
    model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with ServedApi(tmp_path / "api.log", data, model_dir=model_dir, model_threads=1) as api:
        headers = sign_up(api.url)
        for _ in range(2):  # two predictions of the one stored file, both confirmed
            prediction_id = predict(api.url, headers)["prediction_id"]
            feedback = {"prediction_id": prediction_id, "correct": True}
            given = httpx.post(f"{api.url}/feedback/", json=feedback, headers=headers)
            assert given.status_code == 201, given.text
    uploads = data / "uploads"
    (stored,) = uploads.iterdir()

    # A folder inside the uploads, named directly or through a link, is refused.
    (tmp_path / "into-uploads").symlink_to(uploads)
    for target in (uploads / "export", tmp_path / "into-uploads" / "export", uploads):
        refused = export(data, target)
        assert refused.returncode == 2, refused.stderr
        assert "outside the uploads folder" in refused.stderr
    assert list(uploads.iterdir()) == [stored]

    # The stored upload replaced by a link to a file elsewhere: that file is not copied.
    secret = tmp_path / "secret.txt"
    secret.write_text("not an upload")
    stored.unlink()
    stored.symlink_to(secret)
    done = export(data, tmp_path / "export")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    # Her two predictions of one picture are one example: one skipped.
    assert (manifest["images"], manifest["missing_files"]) == ([], 1)
    copied = [p for p in (tmp_path / "export").rglob("*") if p.is_file()]
    assert all("not an upload" not in p.read_text(errors="replace") for p in copied)
