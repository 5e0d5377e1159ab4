"""The comparison feed's state (issue 16)."""

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel

from storage.types import utc_column as _utc


class FeedState(SQLModel, table=True):
    """What a comparison feed (digest.importing.feed) last answered, one row per URL, kept in the database
    so every scheduler and host sends the same validators and the dry run can say how the feed is doing."""

    __tablename__ = "feed_state"
    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=Column(String(2000), unique=True, nullable=False))
    etag: str | None = None  # of the last answer imported: sent back as If-None-Match (a 304 imports nothing)
    last_modified: str | None = None  # likewise, as If-Modified-Since
    answered_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))  # the last good answer
    not_modified: bool = False  # that answer was a 304
    created: int = 0  # what that answer brought
    updated: int = 0
    unchanged: int = 0
    error: str | None = None  # what went wrong since, in words; None once it answers again
    failing_since: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
