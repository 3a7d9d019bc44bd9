"""Logging for every imgclf process: one configuration, text or JSON lines, each record with
the id of the request it is about (``request_id``), so one request can be followed from the
API through the queue to the worker that computed it."""

from __future__ import annotations

import json
import logging
import logging.config
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The request being handled: set by the API's middleware, copied into tasks it starts.
current_request_id: ContextVar[str] = ContextVar("imgclf_request_id", default="")

# A client's id is kept only when it cannot forge or break a log line: short, and letters,
# digits and a few separators (no spaces, quotes or line breaks).
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s%(request_tag)s"


def new_request_id() -> str:
    return secrets.token_hex(16)  # as random as uuid4's hex, without building a UUID


def accepted_request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane one, otherwise a new id."""
    if offered and _SAFE_REQUEST_ID.fullmatch(offered):
        return offered
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Gives each record a ``request_id``: its own (``extra=``) or the current request's."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        record.request_id = request_id
        record.request_tag = f" request_id={request_id}" if request_id else ""
        return True


# What a terminal or a log reader takes for the end of a line, or for a command (ANSI escape
# codes): C0 and C1 control characters, and Unicode's line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(character: re.Match[str]) -> str:
    code = ord(character[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    """One line per record, whatever a client put into it (a request path with a newline and a
    forged line after it, a terminal's escape codes): control characters are written escaped.
    A traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escaped, super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and request_id when known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            line["request_id"] = request_id
        request_ids = getattr(record, "request_ids", None)
        if request_ids:
            line["request_ids"] = request_ids
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def logging_config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` for a process; uvicorn applies it in each of its
    worker processes too. Every logger (uvicorn's included) goes through the root handler."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"()": f"{__name__}.TextFormatter", "fmt": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"imgclf": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "imgclf",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # It warns of every malformed form it reads; the client's answer says what was
            # wrong, and a stranger could fill the log with them.
            "python_multipart": {"level": "ERROR"},
        },
    }


def configure_logging(log_format: str, level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(log_format, level))
