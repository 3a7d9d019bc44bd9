"""Schemathesis over every route of the app's own OpenAPI schema, authenticated, on both databases.

The service is the embedded one with the real model, so ``/model/predict`` and ``/model/jobs``
really decode what they are sent. Two promises are checked on every generated request, valid or
not: no 5xx, and the answer (status, content type, headers, body) is one the schema declares.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imgclf.api import security
from imgclf.api.app import create_app
from imgclf.localservers import PostgresServer
from imgclf.serving import create_service_app
from tests.api.conftest import Caller
from tests.security.conftest import Service, isolated_settings
from tests.support import CHEAP_HASHING

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MAX_EXAMPLES = 25


@dataclass
class FuzzTarget:
    service: Service
    schema: Any
    user: Caller  # a plain user: writes and deletes go through the ownership checks
    admin: Caller  # reads as the admin: the 200 answers of admin-only routes get checked too
    victim: Caller
    database: str


@pytest.fixture(scope="module")
def fuzz_target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
) -> Iterator[FuzzTarget]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "data"
    database_url = ""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.create_database(f"fuzz_{data_dir.parent.name.replace('-', '_')}")
    settings = isolated_settings(
        data_dir=data_dir,
        database_url=database_url,
        model_dir=model_dir,
        model_threads=1,
        predict_timeout_s=5,
    )
    app = create_service_app(settings)
    # Loading the schema starts the app's lifespan (schemathesis keeps it for its own calls).
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        service = Service(
            app, None, settings, security.hash_password("correct horse battery", CHEAP_HASHING)
        )  # type: ignore[arg-type]
        yield FuzzTarget(
            service,
            schema,
            user=service.make_user("Fuzzer"),
            admin=service.admin(),
            victim=service.make_user(),
            database=request.param,
        )
    finally:
        asgi.shutdown_lifespans()


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """Whether negative generation has anything to break: a body, or a parameter whose schema
    constrains it (an unconstrained string path parameter accepts every value)."""
    if "requestBody" in operation:
        return True
    return any(
        parameter.get("schema", {}).keys() - {"type", "title", "description"}
        or parameter.get("schema", {}).get("type") != "string"
        for parameter in operation.get("parameters", [])
    )


def _cases() -> list[tuple[str, str, GenerationMode]]:
    """Every (method, path) the schema documents, read from an app that is built, not started;
    valid inputs for each, and invalid ones where it takes any input that can be invalid."""
    paths = create_app(isolated_settings(env="development")).openapi()["paths"]
    cases = []
    for path, item in paths.items():
        for method, operation in item.items():
            cases.append((method.upper(), path, GenerationMode.POSITIVE))
            if _can_be_invalid(operation):
                cases.append((method.upper(), path, GenerationMode.NEGATIVE))
    return cases


CASES = _cases()
OPERATIONS = sorted({(method, path) for method, path, _mode in CASES})


def test_the_fuzz_covers_every_route_of_the_app() -> None:
    documented = {f"{method} {path}" for method, path in OPERATIONS}
    assert {"POST /model/predict", "GET /model/jobs/{job_id}", "DELETE /user/{user_id}"} <= (
        documented
    )
    assert len(documented) >= 17


# Schemathesis' own pytest plugin does not run under pytest 9 (it reads a private node
# attribute that is gone), so each operation gets a plain test that drives Hypothesis itself.
POSITIVE = [case for case in CASES if case[2] is GenerationMode.POSITIVE]


def _ids(cases: list[tuple[str, str, GenerationMode]]) -> list[str]:
    return [f"{method} {path} {mode.value}" for method, path, mode in cases]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=_ids(CASES))
@pytest.mark.parametrize("fuzz_target", ["sqlite"], indirect=True)
def test_no_server_errors_and_every_answer_matches_the_schema(
    fuzz_target: FuzzTarget, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(fuzz_target, method, path, mode)


# Valid inputs reach the database, so they run on PostgreSQL too; invalid ones are refused
# before any query, so SQLite is enough for them.
@pytest.mark.parametrize(("method", "path", "mode"), POSITIVE, ids=_ids(POSITIVE))
@pytest.mark.parametrize("fuzz_target", ["postgresql"], indirect=True)
def test_valid_inputs_on_postgresql_too(
    fuzz_target: FuzzTarget, method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(fuzz_target, method, path, mode)


def fuzz(fuzz_target: FuzzTarget, method: str, path: str, mode: GenerationMode) -> None:
    """Generate cases for one operation and check each answer."""
    operation = fuzz_target.schema[path][method]
    caller = fuzz_target.admin if method == "GET" else fuzz_target.user

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if path == "/user/{user_id}" and case.path_parameters.get("user_id") == caller.id:
            # Deleting itself would leave the fuzzer with a dead token; test_users covers it.
            case.path_parameters["user_id"] = fuzz_target.victim.id
        case.call_and_validate(headers=caller.headers, checks=CHECKS)

    check()


# Random bytes never get past the image checks, so the model's answers are fuzzed with real
# pictures: any size from 1x1 up, every pixel mode each format stores, random content.
# (Schemathesis names a file part by its content, and knows no BMP; test_hostile_files sends one.)
FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "WEBP": ["RGB", "RGBA"],
}


@st.composite
def pictures(draw: st.DrawFn) -> bytes:
    image_format = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[image_format]))
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    noise = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = noise.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode if mode != "I;16" else "I").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize("fuzz_target", ["sqlite"], indirect=True)
def test_real_pictures_are_classified_and_the_answers_match_the_schema(
    fuzz_target: FuzzTarget,
) -> None:
    schema, headers = fuzz_target.schema, fuzz_target.user.headers

    @given(picture=pictures(), asynchronous=st.booleans())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def classify(picture: bytes, asynchronous: bool) -> None:
        path = "/model/jobs" if asynchronous else "/model/predict"
        case = schema[path]["POST"].Case(body={"file": picture}, media_type="multipart/form-data")
        answer = case.call_and_validate(headers=headers, checks=CHECKS)
        assert answer.status_code == (202 if asynchronous else 200), answer.text
        if asynchronous:
            job = schema["/model/jobs/{job_id}"]["GET"].Case(
                path_parameters={"job_id": answer.json()["job_id"]}
            )
            status = job.call_and_validate(headers=headers, checks=CHECKS).json()["status"]
            assert status in {"pending", "done"}

    classify()
