"""Core statements run on the database driver's own cursor, for the one path that runs them
before every answer: recording a prediction (``api.predictions.recorder``) and the storage
quota it checks (``api.predictions.quota``).

Recording runs right after the model's call, with the CPU caches full of the model: there, one
transaction (check, insert, commit) took 1.0-1.2 ms of CPU through ``Connection.execute``,
most of it SQLAlchemy's own bookkeeping, and 0.5 ms on the driver's cursor (measured
interleaved, after an inference each). SQLAlchemy still compiles the statements, for the
engine's dialect, once; it still owns the connection, the transaction and the pool; values go
through its types' bind processors (JSON, booleans, timestamps) and errors come out as its
exceptions, so a caller sees what ``Connection.execute`` would have given it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """``statement`` compiled for ``dialect``: ``execute`` / ``scalar`` / ``execute_many`` run it
    in a Core connection's transaction, on its driver cursor. ``column_keys``: an insert's
    columns (all others are left out)."""

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        assert isinstance(compiled, SQLCompiler)  # a statement's, not DDL's
        self.sql = compiled.string
        self._dialect = dialect
        self._order = list(compiled.positiontup or []) if compiled.positional else None
        self._processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """The driver's cursor, once the statement has run with ``values``."""
        cursor = connection.connection.cursor()
        parameters = self._parameters(values)
        try:
            cursor.execute(self.sql, parameters)
        except self._dialect.loaded_dbapi.Error as error:
            raise self._wrapped(error, parameters) from error
        return cursor

    def scalar(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None."""
        cursor = self.execute(connection, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return row[0] if row is not None else None

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        cursor = connection.connection.cursor()
        parameters = [self._parameters(values) for values in rows]
        try:
            cursor.executemany(self.sql, parameters)
        except self._dialect.loaded_dbapi.Error as error:
            raise self._wrapped(error, parameters) from error
        finally:
            cursor.close()

    def _parameters(self, values: Mapping[str, Any]) -> Any:
        processed = {
            name: processor(value) if (processor := self._processors.get(name)) else value
            for name, value in values.items()
        }
        return processed if self._order is None else [processed[name] for name in self._order]

    def _wrapped(self, error: Exception, parameters: Any) -> StatementError:
        return DBAPIError.instance(
            self.sql,
            parameters,
            error,
            self._dialect.loaded_dbapi.Error,
            hide_parameters=True,  # never a hash or a user's data in an error or a log
            dialect=self._dialect,
        )
