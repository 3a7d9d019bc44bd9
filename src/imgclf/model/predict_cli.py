"""``imgclf predict PATH...``: classify local files and folders without a server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from imgclf.model.bundle import BundleError
from imgclf.model.classifier import ScoredLabel, load_classifier
from imgclf.model.images import SUPPORTED_EXTENSIONS, ImageError, ImageLimits, check_size
from imgclf.settings import Settings

PROGRESS_MIN_FILES = 8


def collect_files(paths: list[Path], errors: list[tuple[Path, str]]) -> list[Path]:
    """Files named directly (any extension), and supported images found under folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_images_under(path))
        elif path.exists():
            files.append(path)
        else:
            errors.append((path, "No such file or folder."))
    return files


def _images_under(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in SUPPORTED_EXTENSIONS and path.is_file():
            yield path


def predict_paths(
    settings: Settings,
    paths: list[Path],
    *,
    json_output: bool,
    top_k: int,
    model: str | None = None,
) -> int:
    """Print a prediction per image (table, or JSON lines); exit code 1 if any file failed."""
    out = Console()
    err = Console(stderr=True, soft_wrap=True)  # one line per problem, for grep
    errors: list[tuple[Path, str]] = []
    files = collect_files(paths, errors)
    for path, message in errors:
        err.print(f"[red]{path}[/red]: {message}", highlight=False)
    try:
        classifier = load_classifier(settings, model=model)
    except BundleError as error:
        err.print(f"[red]{error}[/red]", highlight=False)
        return 2
    limits = ImageLimits.from_settings(settings)
    table = Table("File", "Label", "Score", *(["Runners-up"] if top_k > 1 else []))
    progress = Progress(
        TextColumn("Classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=len(files) < PROGRESS_MIN_FILES,
    )
    failures = len(errors)
    with progress:
        task = progress.add_task("classify", total=len(files))
        for start in range(0, len(files), settings.max_batch_size):
            chunk = files[start : start + settings.max_batch_size]
            readable = _read_files(chunk, limits, progress.console)
            failures += len(chunk) - len(readable)
            results = classifier.classify_bytes([data for _, data in readable], limits, top_k)
            for (path, _), result in zip(readable, results, strict=True):
                if isinstance(result, ImageError):
                    failures += 1
                    progress.console.print(f"[red]{path}[/red]: {result}", highlight=False)
                elif json_output:
                    print(_json_line(path, result), flush=True)
                else:
                    table.add_row(*_table_row(path, result))
            progress.advance(task, len(chunk))
    if not json_output and table.row_count:
        out.print(table)
    return 1 if failures else 0


def _read_files(
    paths: list[Path], limits: ImageLimits, console: Console
) -> list[tuple[Path, bytes]]:
    """The bytes of each file that can be read and is not too large; the others are said."""
    readable: list[tuple[Path, bytes]] = []
    for path in paths:
        try:
            check_size(path.stat().st_size, limits)  # before reading a huge file
            readable.append((path, path.read_bytes()))
        except ImageError as error:
            console.print(f"[red]{path}[/red]: {error}", highlight=False)
        except OSError as error:
            console.print(
                f"[red]{path}[/red]: cannot read it ({error.strerror or error}).", highlight=False
            )
    return readable


def _json_line(path: Path, top: list[ScoredLabel]) -> str:
    return json.dumps(
        {
            "path": str(path),
            "prediction": top[0].label,
            "score": round(top[0].score, 4),
            "top_k": [{"label": s.label, "score": round(s.score, 4)} for s in top],
        }
    )


def _table_row(path: Path, top: list[ScoredLabel]) -> list[str]:
    row = [str(path), top[0].label, f"{top[0].score:.4f}"]
    if len(top) > 1:
        row.append(", ".join(f"{s.label} {s.score:.3f}" for s in top[1:]))
    return row
