"""The push of vote events to the site (digest.votes.push): the one ``site_push`` row, id 1, and the events
waiting in ``vote_event`` after its ``pushed_through``. Column meanings: storage.models.votes.SitePush."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, text, update

from storage.models import SitePush, VoteEvent

# Two schedulers starting at once both find the row: the second insert does nothing.
_ENSURE = text("INSERT INTO site_push (id, pushed_through, failures, expired) VALUES (1, 0, 0, 0) "
               "ON CONFLICT (id) DO NOTHING")

MAX_ERROR = 2000  # characters of an error kept: a site's error page is not worth more


def push_state(*, session) -> SitePush:
    session.execute(_ENSURE)
    return session.execute(select(SitePush).where(SitePush.id == 1)).scalar_one()


def claim(*, session, now: datetime, until: datetime) -> bool:
    """Take the next attempt if it is due at ``now``, holding it until ``until`` (a pass that dies frees it
    then): True when this process may POST. One UPDATE, so two processes never send the same batch."""
    push_state(session=session)
    taken = session.execute(update(SitePush).where(SitePush.id == 1, or_(
        SitePush.next_attempt_at.is_(None), SitePush.next_attempt_at <= now)).values(next_attempt_at=until))
    return taken.rowcount == 1


def waiting_events(*, session, after: int, limit: int) -> list[VoteEvent]:
    query = select(VoteEvent).where(VoteEvent.id > after).order_by(VoteEvent.id).limit(limit)
    return list(session.execute(query).scalars())


def expire_older(*, session, before: datetime) -> tuple[int, int]:
    """Give up the waiting events cast before ``before``, from the oldest up to the first newer one (the
    cursor only moves forward): (how many, the last id given up); (0, cursor) when none is that old."""
    state = push_state(session=session)
    waiting = VoteEvent.id > state.pushed_through
    newer = session.execute(select(func.min(VoteEvent.id)).where(waiting, VoteEvent.cast_at >= before)).scalar()
    stale = [waiting] + ([VoteEvent.id < newer] if newer is not None else [])
    count, last = session.execute(select(func.count(VoteEvent.id), func.max(VoteEvent.id)).where(*stale)).one()
    if count:
        state.pushed_through, state.expired = last, state.expired + count
    return count, last or state.pushed_through


def record_sent(*, session, through: int) -> None:
    """The site answered 2xx for every event up to ``through``: they are pushed, and it no longer fails."""
    state = push_state(session=session)
    state.pushed_through = max(state.pushed_through, through)
    state.next_attempt_at = state.failing_since = state.last_error = None
    state.failures = 0


def record_failure(*, session, at: datetime, error: str, next_attempt_at: datetime) -> SitePush:
    """The site failed at ``at``: nothing advances; ``failing_since`` is the first failure since it last
    answered 2xx."""
    state = push_state(session=session)
    if state.failing_since is None:
        state.failing_since = at
    state.failures += 1
    state.last_error = error[:MAX_ERROR]
    state.next_attempt_at = next_attempt_at
    return state
