"""What comes back from the mailboxes and the provider: events (opens, clicks, bounces…), the suppressed
addresses they lead to, and the provider's shared rate limit."""

import enum
from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from storage.types import utc_column as _utc
from storage.types import utcnow


class EventKind(str, enum.Enum):
    sent = "sent"
    delivered = "delivered"
    open = "open"
    click = "click"
    bounce = "bounce"
    dropped = "dropped"
    deferred = "deferred"
    spamreport = "spamreport"
    unsubscribe = "unsubscribe"
    resubscribe = "resubscribe"
    ambiguous = "ambiguous"


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # an EventKind value; plain text so new provider events need no migration
    occurred_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    source: str  # "pixel", "click", "webhook", "web", "cli", "sender"
    # No foreign key on delivery_id and issue_id (migration 0014: they were more than half of PostgreSQL's work
    # for a webhook post): the subscriber's implies them. An event's delivery and issue are a delivery's, found
    # in its transaction; deliveries go only with their subscriber, whose events go first; issues stay.
    delivery_id: int | None = Field(default=None, index=True)
    subscriber_id: int | None = Field(default=None, foreign_key="subscriber.id", index=True)
    issue_id: int | None = Field(default=None, index=True)
    machine: bool = False  # opens by image proxies / Apple Mail Privacy Protection
    provider_event_id: str | None = Field(default=None, sa_column=Column(String(100), unique=True, nullable=True))
    detail: str = ""


class Suppression(SQLModel, table=True):
    """An address that must never be added again, kept after its subscriber row is deleted.

    Only a SHA-256 of the lower-cased address is stored, never the address: enough to refuse it on
    import and signup (hash the candidate, look it up), nothing to mail or read back.
    """

    id: int | None = Field(default=None, primary_key=True)
    email_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))  # hex SHA-256
    reason: str = Field(max_length=20)  # "deleted" (asked to be forgotten), "bounced", "complained"
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))


class SendThrottle(SQLModel, table=True):
    """One row (id 1): the provider said 429, so no sender posts before ``blocked_until``.

    In the database, not in a process, so that every worker and scheduler waits out a rate limit that
    any one of them was told about, instead of each finding it out with a 429 of its own.
    """

    __tablename__ = "send_throttle"
    id: int | None = Field(default=None, primary_key=True)
    blocked_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    reason: str = ""
