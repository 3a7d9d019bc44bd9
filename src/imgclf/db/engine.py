"""The engine and its units of work, built by the lifespan or a CLI verb, never at import."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from imgclf.settings import Settings

# Sessions of units of work that will write carry this execution option.
WRITES = "imgclf_writes"
Row = TypeVar("Row")


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, starts transactions: see _begin_sqlite_transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; foreign keys make ON DELETE CASCADE work.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    """In WAL mode a transaction that has read cannot start writing once another connection
    has committed since: it fails at once with "database is locked", whatever the busy
    timeout. So a unit of work that will write takes the write lock as it begins (IMMEDIATE)
    and waits its turn; read-only ones stay DEFERRED and never wait. Units of work run whole
    in one thread (``api.deps.UnitsOfWork``), so the lock is held for microseconds."""
    immediate = connection.get_execution_options().get(WRITES, False)
    statement = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    # On the driver's own cursor, as ``db.driver`` runs the recorder's statements: through
    # ``exec_driver_sql`` SQLAlchemy's execution of a statement without rows or parameters
    # was most of what beginning cost (every unit of work begins, and every recorded answer).
    dbapi = connection.dialect.loaded_dbapi
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement)
    except dbapi.Error as error:  # as SQLAlchemy's own exceptions, so callers see no change
        raise DBAPIError.instance(
            statement, (), error, dbapi.Error, dialect=connection.dialect
        ) from error
    finally:
        cursor.close()


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            hide_parameters=True,
            # Enough kept connections for every worker thread: an overflow connection is
            # closed after use, and reopening one per request showed up in profiles.
            pool_size=settings.db_pool_size + settings.db_max_overflow,
            max_overflow=settings.db_max_overflow,
        )
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        # Errors and logs must never show statement parameters: they include password hashes.
        hide_parameters=True,
    )


class Database:
    """The engine and the two ways through it: units of work (a session in one transaction,
    for requests, the CLI and migrations' admin) and, for the prediction recorder and the
    storage quota alone, Core connections (the quota's reads and the recorder's bulk inserts,
    run before every answer, where the ORM's bookkeeping only costs: a session doubled the CPU
    time of recording a prediction, and of the quota check before it).

    On SQLite, writing transactions begin IMMEDIATE and run one at a time behind a lock of
    this process: a writer waiting on SQLite's own lock sleeps in steps of up to 100 ms, one
    waiting on ours wakes the moment it is free (measured: recording a prediction took
    24-34 ms at 32 concurrent uploads, most of it asleep). Elsewhere the lock is a no-op.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITES: True})
        self._reads = sessionmaker(engine, expire_on_commit=False)
        self._writes = sessionmaker(self._write_engine, expire_on_commit=False)
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        # SQLite's Core writers take turns behind the lock, so they share one connection:
        # taking one from the pool and giving it back was a fifth of recording a prediction.
        self._sqlite_writer: Connection | None = None

    @contextmanager
    def transaction(self, *, writes: bool = True) -> Iterator[Session]:
        """One short unit of work: committed on success, rolled back on error. Run it whole
        in one thread (``api.deps.UnitsOfWork``): it holds a connection, and a writing one
        SQLite's write lock, from start to end."""
        factory, lock = (self._writes, self._write_lock) if writes else (self._reads, nullcontext())
        with factory() as session, lock, session.begin():
            yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """One short read-only transaction on a Core connection, for the jobs route's quota
        check (a session to build cost 0.15 ms of the 0.2 ms it took)."""
        with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """One short write transaction on a Core connection, behind the same lock."""
        if self.engine.dialect.name != "sqlite":
            with self._write_engine.begin() as connection:
                yield connection
            return
        with self._write_lock:
            writer = self._sqlite_writer
            if writer is None or writer.closed or writer.invalidated:
                if writer is not None:
                    writer.close()
                writer = self._sqlite_writer = self._write_engine.connect()
            with writer.begin():
                yield writer

    def dispose(self) -> None:
        with self._write_lock:
            if self._sqlite_writer is not None:
                self._sqlite_writer.close()
                self._sqlite_writer = None
        self.engine.dispose()


def take_rows(
    pending: queue.SimpleQueue[Row | None] | queue.Queue[Row | None], max_rows: int
) -> tuple[list[Row], bool]:
    """A background writer's next rows: waits for one, then takes what else is waiting, up to
    ``max_rows``, to write them in one transaction; and whether ``None`` (stop) was met."""
    rows: list[Row] = []
    item = pending.get()
    while item is not None:
        rows.append(item)
        if len(rows) >= max_rows:
            break
        try:
            item = pending.get_nowait()
        except queue.Empty:
            break
    return rows, item is None
