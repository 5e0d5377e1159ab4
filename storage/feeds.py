"""What a comparison feed last answered (digest.importing.feed): one row per URL in ``feed_state``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, bindparam, select, text

from storage.models import FeedState

# Two schedulers pulling the same feed at once both find the row: the second insert does nothing.
_ENSURE = text(
    "INSERT INTO feed_state (url, not_modified, created, updated, unchanged) "
    "VALUES (:url, :no, 0, 0, 0) ON CONFLICT (url) DO NOTHING"
).bindparams(bindparam("no", type_=Boolean()))

MAX_ERROR = 2000  # characters of an error kept: the first problems of a refused feed, not all of them


def find_feed_state(*, session, url: str) -> FeedState | None:
    return session.execute(select(FeedState).where(FeedState.url == url)).scalar_one_or_none()


def _row(session, url: str) -> FeedState:
    session.execute(_ENSURE, {"url": url, "no": False})
    return session.execute(select(FeedState).where(FeedState.url == url)).scalar_one()


def record_answer(*, session, url: str, at: datetime, etag: str | None, last_modified: str | None,
                  counts: tuple[int, int, int] | None) -> None:
    """The feed answered at ``at``: ``counts`` (created, updated, unchanged) it brought, None for a 304.

    A 304 keeps the validators it was asked with unless it names new ones; an answer clears the error.
    """
    state = _row(session, url)
    state.answered_at, state.not_modified = at, counts is None
    state.created, state.updated, state.unchanged = counts or (0, 0, 0)
    if counts is not None or etag:
        state.etag = etag
    if counts is not None or last_modified:
        state.last_modified = last_modified
    state.error = state.failing_since = None


def record_failure(*, session, url: str, at: datetime, error: str) -> None:
    """The feed could not be fetched or was refused at ``at``; the last good answer and its validators stay.
    ``failing_since`` is the first failure since the feed last answered."""
    state = _row(session, url)
    if state.error is None:
        state.failing_since = at
    state.error = error[:MAX_ERROR]
