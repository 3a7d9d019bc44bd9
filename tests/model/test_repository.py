"""The model repository: <name>/<version>/ bundles, single-bundle layouts, live versions."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from imgclf.model.bundle import BundleError, load_bundle
from imgclf.model.repository import (
    live_versions,
    read_catalogue,
    read_live_record,
    scan_repository,
    write_live_record,
)
from imgclf.settings import Settings


def test_the_repository_lists_each_name_with_its_versions(model_repository: Path) -> None:
    catalogue = read_catalogue(Settings(model_repository=model_repository))

    assert catalogue.names == ["efficientnet-lite0", "second-model"]
    assert catalogue.versions("efficientnet-lite0") == [1, 2]
    assert catalogue.default == "efficientnet-lite0"
    second = catalogue.find("second-model", 1)
    assert second is not None
    assert (second.ref, second.precision, second.top1_published) == (
        "second-model@1",
        "int8",
        0.744,
    )
    assert load_bundle(model_repository / "efficientnet-lite0" / "2").ref == "efficientnet-lite0@2"


def test_a_single_bundle_folder_is_version_1_of_its_name(model_dir: Path, tmp_path: Path) -> None:
    """Today's layout (<data>/models/efficientnet-lite0/bundle.json) and IMGCLF_MODEL_DIR."""
    (tmp_path / "models").mkdir()
    shutil.copytree(model_dir, tmp_path / "models" / "efficientnet-lite0")

    in_repository = read_catalogue(Settings(data_dir=tmp_path))
    alone = read_catalogue(Settings(model_dir=model_dir))

    assert [(e.ref, e.path) for e in scan_repository(tmp_path / "models")] == [
        ("efficientnet-lite0@1", tmp_path / "models" / "efficientnet-lite0")
    ]
    assert in_repository.names == alone.names == ["efficientnet-lite0"]
    assert alone.default == "efficientnet-lite0"
    assert load_bundle(model_dir).ref == "efficientnet-lite0@1"


def test_model_dir_may_name_one_models_folder_of_versions(model_repository: Path) -> None:
    catalogue = read_catalogue(Settings(model_dir=model_repository / "efficientnet-lite0"))

    assert (catalogue.names, catalogue.versions("efficientnet-lite0")) == (
        ["efficientnet-lite0"],
        [1, 2],
    )


def test_a_misplaced_or_broken_bundle_is_left_out_and_the_rest_served(
    model_repository: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(model_repository, root)
    misplaced = root / "efficientnet-lite0" / "3"
    shutil.copytree(root / "efficientnet-lite0" / "2", misplaced)  # still says version 2
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "bundle.json").write_text("{not json")

    refs = [entry.ref for entry in scan_repository(root)]

    assert refs == ["efficientnet-lite0@1", "efficientnet-lite0@2", "second-model@1"]


def test_an_empty_repository_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="imgclf export-model"):
        read_catalogue(Settings(data_dir=tmp_path))


def test_the_live_version_is_the_recorded_one_while_on_disk_else_the_newest(
    model_repository: Path, tmp_path: Path
) -> None:
    catalogue = read_catalogue(Settings(model_repository=model_repository))
    record = tmp_path / "live-models.json"

    assert read_live_record(record) == {}
    write_live_record(record, {"efficientnet-lite0": 1, "gone": 4})
    assert json.loads(record.read_text()) == {"efficientnet-lite0": 1, "gone": 4}
    assert live_versions(catalogue, read_live_record(record)) == {
        "efficientnet-lite0": 1,
        "second-model": 1,
    }
    assert live_versions(catalogue, {"efficientnet-lite0": 7}) == {
        "efficientnet-lite0": 2,
        "second-model": 1,
    }


def test_a_scan_meets_folders_being_removed_and_lists_the_rest(tmp_path: Path) -> None:
    """An operator moving a model out of the repository while the service reads it: the scan
    lists what stays and never fails on what went (a thread adds and removes folders while
    the scans run)."""

    def bundle(folder: Path, name: str, version: int) -> None:
        folder.mkdir(parents=True)
        meta = {"name": name, "version": version, "input_size": 224}
        (folder / "bundle.json").write_text(json.dumps(meta))

    bundle(tmp_path / "staying" / "1", "staying", 1)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for name in ("coming", "going"):
                bundle(tmp_path / name / "1", name, 1)
            for name in ("coming", "going"):
                shutil.rmtree(tmp_path / name)

    churner = threading.Thread(target=churn)
    churner.start()
    failures: list[BaseException] = []
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                refs = {entry.ref for entry in scan_repository(tmp_path)}
            except OSError as error:
                failures.append(error)
            else:
                assert "staying@1" in refs
    finally:
        stop.set()
        churner.join()

    assert failures == []
