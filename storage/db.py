"""Engine and session factory.

SQLite runs in WAL mode (readers never wait for the sender) with a busy timeout, and every transaction
starts with BEGIN IMMEDIATE: two processes that both mean to write queue up for the write lock instead of
one failing later with "database is locked" halfway through a transaction. A connection given
``execution_options(read_only=True)`` starts a plain BEGIN instead: it takes no lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session

from storage.faults import is_transient

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000  # a send waits up to 30 s for a lock held by another process


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)  # a restarted PostgreSQL costs one reconnect, not a crash
    return create_engine(url, **kwargs)


def _sqlite_engine(url: str, **kwargs) -> Engine:
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cursor.close()

    # SQLite has one writer at a time; a writer that finds the lock taken sleeps and tries again (1, 2, 5 … up to
    # 100 ms a time), so threads of one process queued behind each other waited out those sleeps, not each other:
    # 8 requests at once made a vote POST take a second (benchmarks/web_writes.py). They queue here instead, on a
    # lock of this process that hands over the moment a transaction ends; other processes still meet SQLite's.
    writers = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A connection opened with execution_options(read_only=True) only reads: in WAL mode it needs no
        # lock at all, so it must not queue for the writers' one.
        if connection.get_execution_options().get("read_only", False):
            connection.exec_driver_sql("BEGIN")
            return
        # Past the busy timeout, on to SQLite's own wait, which fails as it always did.
        held = writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if held:
                writers.release()
            raise
        connection.info["digest_writer"] = held

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection):
        if connection.info.pop("digest_writer", False):
            writers.release()

    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session that only reads: on SQLite a plain BEGIN, which in WAL mode waits for no writer and takes no lock
    (not even this process's writers' one). Nothing it does is committed."""
    with Session(engine.execution_options(read_only=True)) as session:
        yield session


class HeldTransaction:
    """A transaction one thread begins and another finishes later (a sender's lease ahead, digest.send.ahead),
    used by one thread at a time. `close` rolls back whatever was not committed."""

    def __init__(self, engine: Engine):
        self.session = Session(engine, expire_on_commit=False)

    def commit(self) -> None:
        self.session.commit()

    def close(self) -> None:
        try:
            self.session.close()
        except DBAPIError:  # the connection is gone already (the server ended it), and its transaction with it
            pass


DATABASE_ERRORS = DBAPIError  # anything the database or its driver raised, an outage or not


def insert_on_conflict(session: Session, table: Table):
    """An INSERT into ``table`` that can say ON CONFLICT … DO NOTHING/UPDATE: the session's dialect's own (SQLAlchemy's
    generic INSERT cannot; PostgreSQL's and SQLite's are alike but not interchangeable)."""
    return (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert(table)


# Errors that may mean "the database is unavailable for now", not "this statement is wrong": a locked
# SQLite file past its busy timeout, a PostgreSQL server restarting, a connection dropped mid-transaction.
# storage.faults.is_transient tells those from the permanent ones of the same classes (a wrong password,
# an unknown database, a missing table), which fail at once.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
log = logging.getLogger("digest.db")


def in_transaction(
    engine: Engine, work: Callable[[Session], T], *, budget: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work(session)`` in one transaction; while the database is unavailable, wait and run it again.

    ``work`` must be safe to run twice: a failed attempt was rolled back, but a commit whose answer was
    lost may have happened — the sender's updates are conditional on its own lease, so they are.
    """

    def once() -> T:
        with session_scope(engine) as session:
            return work(session)

    return retrying(once, budget=budget, sleep=sleep)


def retrying(work: Callable[[], T], *, budget: float = 120.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``work()``; on a transient database error wait (0.2 s doubling to 5 s) and call it again.

    Gives up (raises the error) once ``budget`` seconds have been spent waiting; a permanent error (see
    `storage.faults.is_transient`) is raised at once.
    """
    waited, delay = 0.0, 0.2
    while True:
        try:
            return work()
        except TRANSIENT_DB_ERRORS as exc:
            if waited >= budget or not is_transient(exc):
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", str(exc).splitlines()[0][:200], delay)
            sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
