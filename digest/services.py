"""The one wiring: from settings to the services every way in uses — the CLI, the scheduler, the worker and
the web app each call `build_services` once at their entry point and pass the result down.

Nothing reaches through one service to find another: a module that needs the engine and the links is
given the `Services`, not a sender or an app that happens to hold them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from digest.config import Settings
from digest.links import Links, Signer
from digest.render.email import Renderer
from digest.transports import Transport, make_transport
from storage.db import in_transaction, make_engine, retrying

if TYPE_CHECKING:
    from sqlalchemy import Engine

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    """What a process works with, built once: time to sleep is passed in so tests need no real waits."""

    settings: Settings
    engine: Engine
    links: Links
    signer: Signer
    renderer: Renderer
    transport: Transport
    sleep: Callable[[float], None] = time.sleep

    def transaction(self, work: Callable[..., T]) -> T:
        """``work(session)`` in one transaction that waits out a database outage (DIGEST_DB_RETRY_SECONDS)."""
        return in_transaction(self.engine, work, budget=self.settings.db_retry_seconds, sleep=self.sleep)

    def retrying(self, work: Callable[[], T]) -> T:
        """``work()``, which runs its own transaction, tried again through a database outage."""
        return retrying(work, budget=self.settings.db_retry_seconds, sleep=self.sleep)


def build_services(
    settings: Settings, *, transport: Transport | None = None, engine: Engine | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Services:
    """The services ``settings`` name. Without ``transport``: the configured one, behind the rate limit every
    sending process shares (digest.send.ratelimit) — each waits out a 429 that any of them was told about."""
    from digest.send.ratelimit import SharedRateLimit

    links = links_for(settings)
    engine = engine or make_engine(settings.database_url)
    if transport is None:
        transport = SharedRateLimit(make_transport(settings), engine=engine, db_retry_seconds=settings.db_retry_seconds)
    return Services(settings=settings, engine=engine, links=links, signer=links.signer,
                    renderer=Renderer(settings=settings, links=links), transport=transport, sleep=sleep)


def signer_for(settings: Settings) -> Signer:
    return Signer(settings.secret_key, settings.old_secret_keys)


def links_for(settings: Settings) -> Links:
    return Links(base_url=settings.base_url, signer=signer_for(settings))


def settle_heap() -> None:
    """Call once a sending process is set up: what it has built so far stays out of the garbage collector.

    Every batch of a send makes tens of thousands of short-lived dicts and strings, so the collector
    runs its full pass about once per 10,000 recipients, and each pass walks every object alive in the
    process — the modules, the engine, the templates: 1.5 s of a 300,000-recipient send on PostgreSQL,
    0.07 s once they are frozen (benchmarks/send.py; docs/benchmarks.md). For process entry points only
    (`digest send`, `digest worker`, the scheduler): what is frozen is never collected.
    """
    gc.collect()
    gc.freeze()
