"""Small builders for store rows and a recording transport, shared by the tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

from sqlalchemy import select

from digest.claim.selection import canonical_categories
from digest.transports.base import Alone, Batch, SendResult
from storage.db import session_scope
from storage.models import Comparison, Review, Subscriber, SubscriberStatus, Tool

_serial = itertools.count(1)
PERSONAS = ("Builder", "Skeptic", "Futurist", "Founder")


def add_comparison(engine, *, slug=None, category="Developer Tools", published_at: datetime, pcts=(100, 50),
                   title=None, votes=0) -> int:
    number = next(_serial)
    slug = slug or f"tool-{number}-a-vs-tool-{number}-b"
    with session_scope(engine) as session:
        comparison = Comparison(slug=slug, title=title or f"Tool {number}A vs Tool {number}B",
                                url=f"https://verdicts.example.com/compare/{slug}", category=category,
                                published_at=published_at, community_votes=votes)
        for position, pct in enumerate(pcts):
            tool = Tool(position=position, name=f"Tool {number}{'AB'[position % 2]}", tagline="A tagline",
                        entry_price="Free", panel_ship_pct=pct, category=category)
            ships = round(pct / 25)
            tool.reviews = [Review(position=i, persona=p, score=80 - 10 * i, verdict="ship" if i < ships else "skip",
                                   text=f"{p} thinks it is worth a look.") for i, p in enumerate(PERSONAS)]
            comparison.tools.append(tool)
        session.add(comparison)
        session.flush()
        return comparison.id


def add_subscribers(engine, count: int, *, categories=(), status=SubscriberStatus.active, prefix="reader") -> list[int]:
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        rows = []
        for _ in range(count):
            number = next(_serial)
            email = f"{prefix}{number}@example.com"
            rows.append(Subscriber(email=email, email_key=email, name=f"Reader {number}", status=status,
                                   categories=canonical_categories(categories), created_at=now, updated_at=now))
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def link_tags(engine, subscriber_ids) -> dict[int, int]:
    """subscriber id → the random link_tag its row drew at insert (what its links must carry)."""
    with engine.connect() as connection:
        rows = connection.execute(select(Subscriber.id, Subscriber.link_tag).where(Subscriber.id.in_(list(subscriber_ids))))
        return dict(rows.all())


def recipient_token(engine, signer, subscriber_id: int, delivery_id: int | None = None) -> str:
    """The recipient token the service puts in this subscriber's emails: id, delivery and the row's tag."""
    return signer.recipient_token(subscriber_id=subscriber_id, delivery_id=delivery_id,
                                  tag=link_tags(engine, [subscriber_id]).get(subscriber_id, 0))


class RecordingTransport(Alone):
    """A transport that accepts everything and remembers it. `fail_with` raises once per queued error."""

    name = "recording"

    def __init__(self, *errors):
        self.batches: list[Batch] = []
        self.errors = list(errors)
        self.calls = 0

    def send(self, batch: Batch) -> SendResult:
        self.calls += 1
        if self.errors:
            error = self.errors.pop(0)
            if error is not None:
                raise error
        self.batches.append(batch)
        return SendResult(message_id=f"msg-{self.calls}")

    def close(self) -> None:
        pass

    @property
    def recipients(self) -> list[str]:
        return [r.email for batch in self.batches for r in batch.recipients]


def build_sender(settings, *, transport=None, progress=None, sleep=None, **loop_options):
    """A send loop over the services ``settings`` name (as `digest send` builds them), with a test's transport,
    sleep and clock. The loop's services are ``sender.services``."""
    from digest.send.loop import Sender
    from digest.services import build_services

    services = build_services(settings, transport=transport, **({"sleep": sleep} if sleep else {}))
    return Sender(services=services, progress=progress, **loop_options)
