"""Engine and session factory, built by the app's lifespan or a CLI verb, never at import time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from imgclf.settings import Settings

# Sessions of units of work that will write carry this execution option.
WRITES = "imgclf_writes"
_WRITE_LOCK = "imgclf_write_lock"


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
    in one thread (``api.deps.Database``), so the lock is held for microseconds."""
    immediate = connection.get_execution_options().get(WRITES, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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


def make_session_factory(engine: Engine, *, writes: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine``; ``writes=True`` for units of work that will write.

    On SQLite those begin IMMEDIATE, and ``transaction`` runs them one at a time behind a
    lock of this process: a writer waiting on SQLite's own lock sleeps in steps of up to
    100 ms, one waiting on ours wakes the moment it is free (measured: recording a prediction
    took 24-34 ms at 32 concurrent uploads, most of it asleep). Elsewhere nothing changes.
    """
    if not writes:
        return sessionmaker(engine, expire_on_commit=False)
    info = {_WRITE_LOCK: threading.Lock()} if engine.dialect.name == "sqlite" else {}
    return sessionmaker(
        engine.execution_options(**{WRITES: True}), expire_on_commit=False, info=info
    )


@contextmanager
def core_write_transaction(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """One short write transaction on a Core connection of a ``writes=True`` factory's engine,
    behind the same lock: for bulk inserts, where the ORM's bookkeeping only costs (it doubled
    the CPU time of recording a prediction)."""
    bind: Engine = factory.kw["bind"]
    lock = factory.kw.get("info", {}).get(_WRITE_LOCK)
    with lock if lock is not None else nullcontext(), bind.begin() as connection:
        yield connection


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on error."""
    with factory() as session:
        lock = session.info.get(_WRITE_LOCK)
        with lock if lock is not None else nullcontext(), session.begin():
            yield session
