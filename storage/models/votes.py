"""Readers' votes from the email (issue 17): the standing vote per reader and tool, every vote cast as an
event in order (what the site pulls and is pushed), and how far the push to the site has got."""

from datetime import datetime

from sqlalchemy import Column, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.types import utc_column as _utc


class Vote(SQLModel, table=True):
    """A reader's standing vote on one tool of one comparison: one per reader and tool (the unique key
    decides a race), replaced when they choose the other way, deleted with the reader."""

    __table_args__ = (
        UniqueConstraint("subscriber_id", "comparison_id", "tool_position", name="uq_vote_reader_tool"),
        Index("ix_vote_tool", "comparison_id", "tool_position", "choice"),  # the readers' tally
    )
    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", ondelete="CASCADE")
    comparison_id: int = Field(foreign_key="comparison.id")
    tool_position: int  # 0-based, as tool.position; the links say 1 or 2
    choice: str = Field(max_length=4)  # "ship" or "skip"
    issue_id: int | None = Field(default=None, index=True)  # the issue whose email the vote came from, if known
    event_id: int  # the vote_event that set this choice (the next one says it replaces it)
    cast_at: datetime = Field(sa_column=_utc(nullable=False))


class VoteEvent(SQLModel, table=True):
    """A vote cast or changed, in the order cast: `GET /api/votes` pages through these by id and the site push
    sends them. Pseudonymous by design: ``voter`` is a keyed hash, no subscriber id, so nothing here names
    a reader (the events the site already has stay when a reader is deleted; their votes do not)."""

    __tablename__ = "vote_event"
    id: int | None = Field(default=None, primary_key=True)
    comparison: str = Field(sa_column=Column(String(200), nullable=False))  # the comparison's slug
    tool: int  # 1-based, as in the link
    choice: str = Field(max_length=4)
    voter: str = Field(sa_column=Column(String(64), nullable=False))
    cast_at: datetime = Field(sa_column=_utc(nullable=False))
    replaces: int | None = None  # this voter's previous event for this tool, if any


class SitePush(SQLModel, table=True):
    """One row (id 1): how far the push of vote events to DIGEST_SITE_WEBHOOK_URL has got, and since when
    it fails. Events after ``pushed_through`` wait; vote_event is the durable outbox they wait in."""

    __tablename__ = "site_push"
    id: int | None = Field(default=None, primary_key=True)
    pushed_through: int = 0  # the last event id the site answered 2xx for (or that expired)
    next_attempt_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    failures: int = 0  # in a row, for the backoff
    failing_since: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    last_error: str | None = None
    expired: int = 0  # events dropped after waiting longer than the push retries (3 days)
