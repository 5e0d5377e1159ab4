"""Wiring: from settings to a ready `Sender`. Built once at an entry point (CLI, scheduler)."""

from __future__ import annotations

import gc

from digest.config import Settings
from digest.links import Links, Signer
from digest.progress import Progress
from digest.send.ratelimit import SharedRateLimit
from digest.render.email import Renderer
from digest.send.loop import Sender
from digest.transports import Transport, make_transport
from storage.db import make_engine


def signer_for(settings: Settings) -> Signer:
    return Signer(settings.secret_key, settings.old_secret_keys)


def links_for(settings: Settings) -> Links:
    return Links(base_url=settings.base_url, signer=signer_for(settings))


def build_sender(
    settings: Settings, *, transport: Transport | None = None, progress: Progress | None = None, **overrides,
) -> Sender:
    links = links_for(settings)
    engine = make_engine(settings.database_url)
    if transport is None:
        # Every process that sends waits out a 429 that any of them was told about (digest.send.ratelimit).
        transport = SharedRateLimit(make_transport(settings), engine=engine, db_retry_seconds=settings.db_retry_seconds)
    return Sender(
        engine=engine,
        settings=settings,
        transport=transport,
        renderer=Renderer(settings=settings, links=links),
        signer=links.signer,
        links=links,
        progress=progress,
        **overrides,
    )


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
