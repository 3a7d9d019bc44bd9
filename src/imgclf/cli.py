"""The ``imgclf`` command: one verb per process or task. Each verb imports only what it needs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from imgclf.settings import Settings, get_settings

app = typer.Typer(
    help="imgclf: an ImageNet image-classification service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="The models: list them, swap a live version, how they do on real traffic.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment plus CLI overrides; a bad setting exits with its message."""
    try:
        base = get_settings()
        values = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**{**base.model_dump(), **values}) if values else base
    except ValidationError as error:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        typer.secho(f"Invalid settings: {messages}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes.")] = None,
    queue_url: Annotated[
        str | None, typer.Option(help="redis://host:port/db to use Redis workers.")
    ] = None,
) -> None:
    """Run the HTTP API (embedded model worker unless a queue URL is given)."""
    from imgclf.serving import run_server

    settings = load_settings(host=host, port=port, web_concurrency=workers, queue_url=queue_url)
    run_server(settings)


@app.command()
def populate() -> None:
    """Create or upgrade the tables and create the admin user (idempotent)."""
    from imgclf import serving

    settings = load_settings()
    created = serving.populate(settings)
    state = "created" if created else "already present"
    typer.echo(f"Database at head; admin {settings.admin_email} {state}.")


@app.command()
def worker(
    queue_url: Annotated[str | None, typer.Option(help="redis://host:port/db")] = None,
    processes: Annotated[int, typer.Option(help="Worker processes to start.", min=1)] = 1,
    concurrency: Annotated[
        int | None, typer.Option(help="Batches each process runs at once (0: one per core).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Export Prometheus metrics here (the next ports for more processes)."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="A model to serve (repeat for more; none named: every model)."),
    ] = None,
) -> None:
    """Run model workers that take jobs from the Redis queue."""
    from imgclf.worker.main import run_workers

    settings = load_settings(
        queue_url=queue_url,
        worker_concurrency=concurrency,
        worker_metrics_port=metrics_port,
        worker_models=model or None,
    )
    if not settings.queue_url:
        typer.secho("A worker needs --queue-url or IMGCLF_QUEUE_URL.", fg="red", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_workers(settings, processes))


@contextlib.contextmanager
def _admin_session(
    api_url: str | None, email: str | None, password: str | None
) -> Iterator[tuple[str, str]]:
    """The API's URL and an admin token (from the options, else the settings); a refusal or
    an unreachable API, at login or within the block, ends the command with its reason."""
    from imgclf.models_admin import AdminCallError, login

    settings = load_settings()
    url = api_url or settings.api_url
    try:
        yield (
            url,
            login(
                url,
                email or settings.admin_email,
                password or settings.admin_password.get_secret_value(),
            ),
        )
    except AdminCallError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None


ApiUrl = Annotated[str | None, typer.Option(help="Base URL of the API (IMGCLF_API_URL).")]
AdminEmail = Annotated[str | None, typer.Option(help="Admin email (IMGCLF_ADMIN_EMAIL).")]
AdminPassword = Annotated[
    str | None, typer.Option(help="Admin password (IMGCLF_ADMIN_PASSWORD).", hide_input=True)
]


@models_app.command("list")
def models_list(
    api_url: ApiUrl = None, email: AdminEmail = None, password: AdminPassword = None
) -> None:
    """The models the running service serves, their versions and workers."""
    from imgclf.models_admin import describe, list_models

    with _admin_session(api_url, email, password) as (url, token):
        for model in list_models(url, token):
            typer.echo(describe(model))


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="The model, e.g. efficientnet-lite0.")],
    version: Annotated[int, typer.Argument(help="The version to make live.", min=1)],
    api_url: ApiUrl = None,
    email: AdminEmail = None,
    password: AdminPassword = None,
) -> None:
    """Make a version live without downtime (rolling back: promote the old one)."""
    from imgclf.models_admin import describe, promote

    with _admin_session(api_url, email, password) as (url, token):
        model = promote(url, token, name, version)
    typer.echo(f"live: {describe(model)}")


@models_app.command("shadow")
def models_shadow(
    name: Annotated[str, typer.Argument(help="The model whose uploads are copied.")],
    candidate: Annotated[
        str | None,
        typer.Argument(help="The version to compare, name@version; none: show the figures."),
    ] = None,
    fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The share of uploads copied, 0 to 1.")
    ] = 0.1,
    off: Annotated[bool, typer.Option("--off", help="Stop the shadow comparison.")] = False,
    days: Annotated[int, typer.Option(min=1, help="The figures' window, in days.")] = 7,
    api_url: ApiUrl = None,
    email: AdminEmail = None,
    password: AdminPassword = None,
) -> None:
    """Copy a share of a model's uploads to a candidate version and compare their answers
    (off the callers' path); without a candidate, show how they compared."""
    from imgclf.models_admin import describe_shadow, read_shadow, set_shadow, stop_shadow

    with _admin_session(api_url, email, password) as (url, token):
        if off:
            stop_shadow(url, token, name)
        elif candidate is not None:
            set_shadow(url, token, name, candidate, fraction)
        for line in describe_shadow(read_shadow(url, token, name, days)):
            typer.echo(line)


@app.command()
def ui(
    api_url: Annotated[str | None, typer.Option(help="Base URL of the API.")] = None,
    port: Annotated[int | None, typer.Option(help="Port for the UI.")] = None,
) -> None:
    """Run the Streamlit UI, pointed at an API URL."""
    from imgclf.ui.launch import run_ui

    settings = load_settings(api_url=api_url, ui_port=port)
    raise typer.Exit(run_ui(settings))


@app.command()
def up(
    redis: Annotated[
        bool, typer.Option(help="Start a local redis-server and Redis workers.")
    ] = False,
    workers: Annotated[int, typer.Option(help="Redis worker processes.", min=0)] = 0,
    with_ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Start the UI too.")] = True,
    monitor: Annotated[
        bool, typer.Option(help="Start Prometheus too, scraping the API and the workers.")
    ] = False,
    prometheus_port: Annotated[int, typer.Option(help="Port of that Prometheus.")] = 9090,
    rules: Annotated[
        Path | None, typer.Option(help="Rules for it (default: deploy/prometheus/rules.yml).")
    ] = None,
) -> None:
    """Run the API and the UI (and Redis workers, Prometheus when asked) as one group."""
    from imgclf.up import MonitorOptions, run_group

    settings = load_settings()
    options = None
    if monitor:
        options = MonitorOptions(port=prometheus_port)
        options.rules = rules or options.rules
    raise typer.Exit(
        run_group(settings, redis=redis, workers=workers, with_ui=with_ui, monitor=options)
    )


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    top_k: Annotated[int, typer.Option(help="Classes to show per image.", min=1)] = 1,
    model: Annotated[
        str | None, typer.Option(help="A model of the repository: NAME or NAME@VERSION.")
    ] = None,
) -> None:
    """Classify image files or folders locally, without a server."""
    from imgclf.model.predict_cli import predict_paths

    settings = load_settings()
    raise typer.Exit(
        predict_paths(settings, paths, json_output=json_output, top_k=top_k, model=model)
    )


VersionOption = Annotated[int, typer.Option(help="Version folder to write.", min=1)]
RepositoryOption = Annotated[
    Path | None,
    typer.Option(help="Model repository (default: IMGCLF_MODEL_REPOSITORY, else data/models)."),
]
OutputOption = Annotated[
    Path | None, typer.Option(help="Write this one bundle folder instead of the repository.")
]
WeightBitsOption = Annotated[
    int | None,
    typer.Option(
        min=7,
        max=8,
        help="INT8 only: 8-bit weights (best with VNNI) or 7 (no saturation on CPUs without "
        "it); default: what suits this CPU.",
    ),
]


@app.command("export-model")
def export_model(
    model: Annotated[
        str, typer.Option(help="efficientnet-lite0, efficientnet-lite0-int8 or efficientnet-lite2.")
    ] = "efficientnet-lite0",
    version: VersionOption = 1,
    repository: RepositoryOption = None,
    output: OutputOption = None,
    calibration_dir: Annotated[
        Path | None,
        typer.Option(help="INT8 only: calibrate on the images in this folder (e.g. uploads)."),
    ] = None,
    weight_bits: WeightBitsOption = None,
) -> None:
    """Build a model bundle from the packaged weights into the model repository (needs torch)."""
    from imgclf.model.export_cli import build_model

    settings = load_settings()
    repository = repository or settings.resolved_model_repository
    target = output or repository / model / str(version)
    raise typer.Exit(build_model(model, target, version, calibration_dir, weight_bits))


@app.command()
def quantize(
    version: VersionOption = 1,
    repository: RepositoryOption = None,
    output: OutputOption = None,
    calibration_dir: Annotated[
        Path | None,
        typer.Option(help="Calibrate on the images in this folder (default: packaged photos)."),
    ] = None,
    weight_bits: WeightBitsOption = None,
) -> None:
    """Build efficientnet-lite0-int8: EfficientNet-Lite0 quantized to INT8 (needs torch)."""
    export_model(
        "efficientnet-lite0-int8", version, repository, output, calibration_dir, weight_bits
    )


@models_app.command("quality")
def models_quality(
    since: Annotated[
        datetime | None, typer.Option(formats=DATE_FORMATS, help="Predictions from (UTC).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=DATE_FORMATS, help="... and before (UTC).")
    ] = None,
    days: Annotated[int | None, typer.Option(help="The last N days.", min=1)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per model version: predictions its users marked right, wrong or left unmarked."""
    from imgclf.api.quality.terminal import show_quality

    settings = load_settings()
    raise typer.Exit(
        show_quality(settings, since=since, until=until, days=days, json_output=json_output)
    )


@app.command("export-feedback")
def export_feedback(
    directory: Annotated[Path, typer.Argument(help="Folder to write (new, empty or an export).")],
    salt: Annotated[
        str | None,
        typer.Option(
            envvar="IMGCLF_EXPORT_SALT",
            help="Key for hashing user ids (default: derived from the secret key).",
        ),
    ] = None,
) -> None:
    """Write the uploads users confirmed or corrected as a labelled ImageFolder data set."""
    from imgclf.api.feedback.dataset import ExportError, run_export

    settings = load_settings()
    try:
        summary = run_export(settings, directory, salt=salt)
    except ExportError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{summary.images} images in {summary.classes} classes in {directory} "
        f"({summary.copied} copied, {summary.removed} removed); "
        f"{summary.missing} skipped: their files are no longer in the uploads folder."
    )
