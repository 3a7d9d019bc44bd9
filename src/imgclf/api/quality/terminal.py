"""``imgclf models quality``: the quality figures read straight from the database, as a table."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table

from imgclf.api.quality.router import quality_window
from imgclf.api.quality.schemas import Interval, QualityReport
from imgclf.api.quality.service import model_quality
from imgclf.db.engine import Database, make_engine
from imgclf.db.migrate import schema_is_current
from imgclf.settings import Settings


def _percent(share: float | None, interval: Interval | None) -> str:
    if share is None or interval is None:
        return "-"
    return f"{share:.1%} ({interval[0]:.1%}-{interval[1]:.1%})"


def quality_table(report: QualityReport) -> Table:
    window = f"{report.since or 'the start'} to {report.until or 'now'}"
    table = Table(title=f"Quality from feedback, predictions from {window}")
    table.add_column("model", no_wrap=True)
    for column in ("predictions", "right", "wrong", "unmarked", "judges", "right when marked"):
        table.add_column(column, justify="right")
    table.add_column("most corrected")
    for model in report.models:
        corrected = "; ".join(
            f"{item.predicted_class} ({item.wrong}) -> "
            + ", ".join(f"{c.correct_class or '?'} {c.count}" for c in item.corrected_to)
            for item in model.most_corrected
        )
        table.add_row(
            model.model,
            str(model.predictions),
            f"{model.right}  {_percent(model.right_share, model.interval)}",
            f"{model.wrong}  {_percent(model.wrong_share, model.wrong_interval)}",
            f"{model.unmarked}  {_percent(model.unmarked_share, model.unmarked_interval)}",
            str(model.judges),
            _percent(model.right_when_marked, model.right_when_marked_interval),
            corrected or "-",
        )
    return table


def show_quality(
    settings: Settings,
    *,
    since: datetime | None,
    until: datetime | None,
    days: int | None,
    json_output: bool,
) -> int:
    """Print the figures; an exit status (2: a bad window or an unmigrated database)."""
    console = Console()
    try:
        start, end = quality_window(since, until, days)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    database = Database(make_engine(settings))
    try:
        if not schema_is_current(database.engine):
            console.print("[red]The database is not at the newest schema; run imgclf populate.[/]")
            return 2
        with database.transaction(writes=False) as session:
            report = model_quality(session, since=start, until=end)
    finally:
        database.dispose()
    if json_output:
        print(report.model_dump_json(indent=2))
    else:
        console.print(quality_table(report))
        console.print(
            "Shares are of all predictions, with Wilson 95% intervals in brackets; "
            f"{report.unlinked_feedback} feedback in the window named no prediction."
        )
    return 0
