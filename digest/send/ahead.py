"""The next batch leased (PostgreSQL) or read (SQLite), and built, while this one is posted.

A batch's POST waits on the provider, and the claim of the next batch waits on the database: one after the
other, a worker spent about as long in the claim as in the POST (benchmarks/send.py). So while batch N is out,
a thread opens the transaction that will record N, leases batch N+1 in it (`storage.deliveries.claim_batch`:
FOR UPDATE SKIP LOCKED, so no other sender takes those rows), uncommitted, and builds its request. When N's
POST returns, the same transaction records N as sent and commits; only then does N+1 go out.

Nothing of the lease is visible to others before that commit, so what a crash, a hang or a lost connection
leaves is what the claim after the POST left: N 'sending' (possibly posted), N+1 pending. PostgreSQL ends the
transaction when it sits idle longer than its sender asked (`end_idle_transaction_after`), which unlocks N+1
for the other senders within seconds.

SQLite has one writer, so there the thread only reads the next batch (`ReadAhead`), and the write transaction
after the POST leases it, unless another sender took some of it meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, TypeVar

from storage.db import DATABASE_ERRORS, HeldTransaction, read_session

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session

log = logging.getLogger("digest.send")

T = TypeVar("T")
R = TypeVar("R")

MISSED = object()  # `Ahead.finish` could not use what it picked: the caller claims the usual way


class _OnThread(Generic[T]):
    """What the thread prepares: ``pick(session)``'s result, once it is there."""

    _future: Future[T]

    def picked(self) -> T | object:
        """What ``pick`` returned, once it has; MISSED when the database failed it (`finish` says so)."""
        try:
            return self._future.result()
        except DATABASE_ERRORS:
            return MISSED


class Ahead(_OnThread[T]):
    """One transaction opened ahead on a thread: ``pick(session)`` runs there at once; `finish` runs the rest on
    the caller's thread, in the same transaction, and commits; `drop` rolls it back. Each is called once, from
    one thread (the session passes from the pool's thread to the caller's through the future)."""

    def __init__(self, pool: ThreadPoolExecutor, engine: Engine, pick: Callable[[Session], T]):
        self._held = HeldTransaction(engine)
        self._future = pool.submit(pick, self._held.session)

    def finish(self, rest: Callable[[Session, T], R]) -> R | object:
        """``rest(session, picked)``, committed with the pick; MISSED (rolled back) when ``rest`` says so, or when
        the database failed the pick or the rest (an outage, or the server ended the idle transaction: PostgreSQL
        says so as an InternalError): the caller then does it all again in a transaction of its own, which waits
        out an outage and raises what is not one."""
        try:
            result = rest(self._held.session, self._future.result())
            if result is not MISSED:
                self._held.commit()
            return result
        except DATABASE_ERRORS as exc:
            log.info("the batch prepared ahead is given up (%s): claimed again", str(exc).splitlines()[0][:200])
            return MISSED
        finally:
            self._held.close()

    def drop(self) -> None:
        """Give the pick up: the rollback undoes what it did (a lease never committed) and unlocks its rows."""
        try:
            self._future.result()
        except Exception:  # noqa: BLE001 - the pick's own failure changes nothing: nothing of it is kept
            pass
        finally:
            self._held.close()


class ReadAhead(_OnThread[T]):
    """SQLite's way (one writer: a transaction held open through a POST would hold up every other write):
    ``pick(session)`` runs on the thread in a read transaction of its own, which in WAL mode waits for no writer
    and holds nothing, closed as soon as it has read; `finish` runs the rest in a write transaction of
    ``transaction``'s (`Services.transaction`, which waits out a busy database), where what was read is leased
    only if no one took any of it since (`storage.deliveries.lease_picked`)."""

    def __init__(self, pool: ThreadPoolExecutor, engine: Engine, pick: Callable[[Session], T],
                 transaction: Callable[[Callable[[Session], R]], R]):
        self._future = pool.submit(self._read, engine, pick)
        self._transaction = transaction

    @staticmethod
    def _read(engine: Engine, pick: Callable[[Session], T]) -> T:
        with read_session(engine) as session:
            return pick(session)

    def finish(self, rest: Callable[[Session, T], R]) -> R | object:
        """``rest(session, picked)`` in a write transaction; MISSED when the read failed (the caller claims as
        usual)."""
        picked = self.picked()
        if picked is MISSED:
            log.info("the batch read ahead is given up: claimed again")
            return MISSED
        return self._transaction(lambda session: rest(session, picked))

    def drop(self) -> None:
        """Nothing to undo: the read wrote nothing. Waits for it to end."""
        self.picked()
