"""What an import reads and writes: comparisons upserted by slug with their tools and reviews (or taken back
before any issue claimed them: the push API's DELETE), subscribers upserted in bulk by email key. The categories in the store (what the importers check against) are storage.catalog's.

The importers (digest.importing) decide what commits together: they open the transaction and pass its
session or connection here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ARRAY, Connection, any_, bindparam, false, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload
from sqlalchemy.types import DateTime, String
from sqlmodel import Session

from storage.models import Comparison, Issue, IssueComparison, Review, Subscriber, SubscriberStatus, Tool
from storage.types import UTCDateTime

# A comparison's tools as the importer hands them over: (tool columns, [review columns, …]), in order.
ToolColumns = list[tuple[dict, list[dict]]]

IN_LIST = 500  # slugs per IN list: well under SQLite's 32,766 parameters

_SUBSCRIBERS = Subscriber.__table__
SUBSCRIBER_ROW = ("email", "email_key", "name", "categories")  # the keys of a subscriber row to upsert
ZONE = "timezone"  # a row's optional key: rows from a file without that column leave the stored zone as it is


# -- comparisons -----------------------------------------------------------------------------------------

def stored_comparisons(*, session: Session, slugs: Sequence[str]) -> dict[str, Comparison]:
    """The stored comparisons among ``slugs``, by slug, with their tools and reviews loaded."""
    found: dict[str, Comparison] = {}
    for start in range(0, len(slugs), IN_LIST):
        # Locked (PostgreSQL) until the import commits: an issue claiming one of them meanwhile waits, so
        # whether it was claimed, and at which version, is what the import reads.
        query = (select(Comparison).where(Comparison.slug.in_(slugs[start:start + IN_LIST]))
                 .options(selectinload(Comparison.tools).selectinload(Tool.reviews)).with_for_update())
        found.update((comparison.slug, comparison) for comparison in session.execute(query).scalars())
    return found


def create_comparison(*, session: Session, slug: str, columns: dict, tools: ToolColumns, now: datetime) -> None:
    session.add(Comparison(slug=slug, **columns, tools=_new_tools(tools), created_at=now, updated_at=now))


def update_comparison(*, comparison: Comparison, columns: dict, tools: ToolColumns, now: datetime) -> None:
    """``comparison`` (from ``stored_comparisons``) takes ``columns`` and ``tools``; ``created_at`` stays."""
    for field, value in columns.items():
        setattr(comparison, field, value)
    comparison.tools = _new_tools(tools)  # delete-orphan: the old tools and reviews go
    comparison.version += 1
    comparison.updated_at = now


def delete_unclaimed_comparison(*, session: Session, slug: str) -> bool:
    """Delete comparison ``slug``, its tools and reviews, if no issue has claimed it; whether it did.

    Unpublishing (issue 16): a comparison no issue holds exists only here, so taking it out of the store
    is what keeps it out of every later issue, and a later PUT stores it anew. A claimed one is never
    deleted: the issues that carry it and the archive keep showing it.

    The row is locked with the unclaimed test in its WHERE: on PostgreSQL, an issue claiming it at this
    moment holds the row until it commits, and then ``claimed`` is true and nothing is deleted. The other
    order (this delete commits while the claim's INSERT … SELECT still sees the row) fails that claim on
    its foreign key: the whole opening rolls back, loudly, and sends nothing.
    """
    in_an_issue = select(IssueComparison.id).where(IssueComparison.comparison_id == Comparison.id).exists()
    query = (select(Comparison).where(Comparison.slug == slug, Comparison.claimed == false(), ~in_an_issue)
             .with_for_update())
    comparison = session.execute(query).scalar_one_or_none()
    if comparison is None:
        return False
    session.delete(comparison)  # its tools and reviews go with it (delete-orphan)
    return True


def claiming_week(*, session: Session, slug: str) -> str | None:
    """The week of the issue that claimed comparison ``slug``; None when no issue has, or no such slug."""
    query = (select(Issue.week).join(IssueComparison, IssueComparison.issue_id == Issue.id)
             .join(Comparison, Comparison.id == IssueComparison.comparison_id).where(Comparison.slug == slug))
    return session.execute(query).scalar_one_or_none()


def _new_tools(tools: ToolColumns) -> list[Tool]:
    return [Tool(position=position, **columns,
                 reviews=[Review(position=order, **review) for order, review in enumerate(reviews)])
            for position, (columns, reviews) in enumerate(tools)]


# -- subscribers -----------------------------------------------------------------------------------------

def stored_subscribers(*, connection: Connection, keys: list[str]) -> dict[str, tuple[str, str, str | None]]:
    """(name, categories, timezone) of the addresses already stored, by email_key."""
    if connection.dialect.name == "postgresql":  # one array parameter: 10x faster than 5,000 IN parameters
        match = _SUBSCRIBERS.c.email_key == any_(bindparam("keys", keys, type_=ARRAY(String())))
    else:
        match = _SUBSCRIBERS.c.email_key.in_(keys)
    query = select(_SUBSCRIBERS.c.email_key, _SUBSCRIBERS.c.name, _SUBSCRIBERS.c.categories,
                   _SUBSCRIBERS.c.timezone).where(match)
    return {key: (name, categories, zone) for key, name, categories, zone in connection.execute(query)}


def subscriber_id(*, connection: Connection, email_key: str) -> int:
    query = select(_SUBSCRIBERS.c.id).where(_SUBSCRIBERS.c.email_key == email_key)
    return connection.execute(query).scalar_one()


def upsert_subscribers(*, connection: Connection, rows: list[dict], now: datetime) -> None:
    """INSERT … ON CONFLICT (email_key) DO UPDATE name, categories — never status, never confirmed_at.

    ``rows`` hold the SUBSCRIBER_ROW keys, and all or none of them ZONE (then the time zone is set too);
    a new address starts active and confirmed at ``now``. Rows whose name and categories (and zone) are
    already stored are not rewritten, so re-importing a list is a read, and ``updated_at`` says when
    something really changed.
    """
    columns = (*SUBSCRIBER_ROW, ZONE) if rows and ZONE in rows[0] else SUBSCRIBER_ROW
    if connection.dialect.name == "postgresql":
        statement, parameters = _from_arrays(rows, now, columns), {}
    else:
        at = _bound_once(now, connection)
        statement = sqlite.insert(_SUBSCRIBERS).values(
            status=SubscriberStatus.active.value, created_at=at, updated_at=at, confirmed_at=at)
        parameters = rows
    new = statement.excluded
    changed = (_SUBSCRIBERS.c.name != new.name) | (_SUBSCRIBERS.c.categories != new.categories)
    updates = {"name": new.name, "categories": new.categories, "updated_at": new.updated_at}
    if ZONE in columns:
        changed |= _SUBSCRIBERS.c.timezone.is_distinct_from(new.timezone)  # NULL is a value here
        updates[ZONE] = new.timezone
    statement = statement.on_conflict_do_update(index_elements=["email_key"], set_=updates, where=changed)
    connection.execute(statement, parameters)


def _from_arrays(rows: list[dict], now: datetime, columns: tuple[str, ...]):
    """PostgreSQL: the chunk as one array per column, unnested into one INSERT … SELECT.

    psycopg's executemany runs one statement per row (~37 µs each: 37 s for a million); one statement
    per chunk over arrays takes a few µs a row.
    """
    arrays = [bindparam(f"{column}_list", [row[column] for row in rows], type_=ARRAY(String()))
              for column in columns]
    source = func.unnest(*arrays).table_valued(*columns).render_derived()
    at = literal(now, UTCDateTime())
    return postgresql.insert(_SUBSCRIBERS).from_select(
        [*columns, "status", "created_at", "updated_at", "confirmed_at"],
        select(*(source.c[column] for column in columns), literal(SubscriberStatus.active.value), at, at, at))


def _bound_once(now: datetime, connection: Connection):
    """``now`` as the driver receives it for a UTCDateTime column, converted once per chunk.

    A typed parameter is converted per row and per column: three datetimes a row cost about half the
    import time. Converted here, it goes in as a constant the driver takes as is (naive UTC on
    PostgreSQL, the ISO string SQLAlchemy writes on SQLite) — the same value UTCDateTime would store.
    """
    convert = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
    value = convert(now) if convert else now
    return literal(value, String() if isinstance(value, str) else DateTime())
